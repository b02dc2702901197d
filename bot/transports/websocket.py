"""WebSocket transport: one client connection of ``voicebot serve`` as a pipecat transport.

The wire protocol is pipecat's own ``ProtobufFrameSerializer``: the client sends ``AudioRawFrame``s
(16 kHz mono PCM16), the bot sends its audio as ``AudioRawFrame``s, an ``InterruptionFrame`` when it is
cut, the user's ``TranscriptionFrame``s, and voicebot's own events as ``MessageFrame``s (JSON with
``"label": "voicebot"``, see docs/server.md). Any pipecat client speaking that serializer connects unchanged.

Audio out is paced in real time: at most ``audio_lead_secs`` is sent ahead of the playback position, so
after a barge-in the client has less than that buffered, and it drops it on the interruption frame.

Whatever the client does wrong (malformed frames, another sample rate, sending faster than real time,
no longer reading) ends THIS session with a close code and a one-line reason (:class:`CloseReason`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import websockets
from google.protobuf.message import DecodeError
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from websockets.asyncio.server import ServerConnection

from bot.transports.file import SessionClock
from bot.transports.overload import AudioRing, BoundedInput

MESSAGE_LABEL = "voicebot"
"""``label`` of every JSON message voicebot sends in a protobuf ``MessageFrame``."""


@dataclass(frozen=True)
class CloseReason:
    """Why a session's connection was closed: a WebSocket close code and a one-line reason."""

    code: int
    reason: str


# Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED = 1003
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011
RESTART = 1012
TRY_AGAIN = 1013


@dataclass(frozen=True)
class Limits:
    """What one client may send and how long it may stall (``[server]`` config)."""

    sample_rate: int = 16000
    max_messages_per_sec: int = 200
    max_audio_burst_secs: float = 2.0
    max_input_lag_secs: float = 1.0
    audio_lead_secs: float = 0.12
    send_timeout_secs: float = 5.0


@dataclass
class Counters:
    """What this session did (dropped audio: ``input().drops.total_secs``)."""

    audio_in_secs: float = 0.0
    audio_out_secs: float = 0.0


class WebsocketTransport(BaseTransport):
    """One client over WebSocket. ``closed`` is set when the connection ends, ``close_reason`` says why."""

    default_echo = "barge-in"
    """The browser (or client) cancels its own echo; the user may interrupt the bot."""

    def __init__(self, conn: ServerConnection, *, out_rate: int, limits: Limits) -> None:
        super().__init__()
        self.conn = conn
        self.limits = limits
        self.clock = SessionClock()
        self.counters = Counters()
        self.serializer = ProtobufFrameSerializer()
        self.closed = asyncio.Event()
        self.close_reason: CloseReason | None = None
        self.opened_at = time.monotonic()
        """Audio can't have been recorded before the connection opened: the real-time check counts from here."""
        self._params = TransportParams(
            audio_in_enabled=True, audio_in_sample_rate=limits.sample_rate,
            audio_out_enabled=True, audio_out_sample_rate=out_rate,
            audio_out_end_silence_secs=0,
        )
        self._input = WebsocketInputTransport(self, self._params, name="ws-input")
        self._output = WebsocketOutputTransport(self, self._params, name="ws-output")
        self._send_lock = asyncio.Lock()
        self._closing: asyncio.Task | None = None
        """The close started from synchronous code (:meth:`close_soon`); :meth:`close` awaits it."""

    def input(self) -> WebsocketInputTransport:
        return self._input

    def output(self) -> WebsocketOutputTransport:
        return self._output

    # -- sending -----------------------------------------------------------------------------------

    async def send_frame(self, frame: Frame) -> bool:
        """Serialize and send one frame; False if the connection is gone. A client that does not take the
        data within ``send_timeout_secs`` has stopped reading: its session ends."""
        if self.closed.is_set():
            return False
        payload = await self.serializer.serialize(frame)
        if payload is None:
            return True
        try:
            async with self._send_lock:
                await asyncio.wait_for(self.conn.send(payload), timeout=self.limits.send_timeout_secs)
        except TimeoutError:
            await self.close(CloseReason(POLICY, f"client stopped reading for {self.limits.send_timeout_secs:g} s"))
            return False
        except websockets.ConnectionClosed:
            self._mark_closed(CloseReason(GOING_AWAY, "client disconnected"))
            return False
        return True

    async def send_message(self, type_: str, /, **data: Any) -> bool:
        """A voicebot JSON message (``{"label": "voicebot", "type": type_, ...}``) in a protobuf MessageFrame."""
        return await self.send_frame(OutputTransportMessageUrgentFrame(
            message={"label": MESSAGE_LABEL, "type": type_, **data}))

    def post_message(self, type_: str, /, **data: Any) -> None:
        """``send_message`` from synchronous code (turn-tracker listeners): sent as soon as the loop can."""
        self._post(self.send_message(type_, **data))

    def post_transcription(self, text: str, timestamp: str) -> None:
        self._post(self.send_frame(TranscriptionFrame(text=text, user_id="user", timestamp=timestamp)))

    def _post(self, coro) -> None:
        if self.closed.is_set():
            coro.close()
            return
        self._output.post(coro)

    # -- closing -----------------------------------------------------------------------------------

    def _mark_closed(self, reason: CloseReason) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self.closed.set()

    async def close(self, reason: CloseReason) -> None:
        """End the connection with ``reason`` (the first reason given is the one kept and sent)."""
        first = self.close_reason is None
        self._mark_closed(reason)
        if first:
            await self._send_close(reason)
        elif self._closing is not None:
            # A close started from synchronous code is still sending its close frame: it is part of this
            # connection's end (and its errors are not lost), so wait for it (it is bounded).
            closing, self._closing = self._closing, None
            await asyncio.wait({closing}, timeout=3.0)
            if not closing.done():
                closing.cancel()
            elif not closing.cancelled() and closing.exception() is not None:
                logger.warning(f"closing the connection failed: {closing.exception()!r}")

    def close_soon(self, reason: CloseReason) -> None:
        """:meth:`close` from synchronous code: the session counts as closed at once (nothing more is sent,
        the server ends the session), the close frame follows in a task this transport keeps until
        :meth:`close` has awaited it."""
        if self.close_reason is not None:
            return
        self._mark_closed(reason)
        self._closing = asyncio.get_running_loop().create_task(self._send_close(reason), name="ws-close")

    async def _send_close(self, reason: CloseReason) -> None:
        try:
            await asyncio.wait_for(self.conn.close(reason.code, reason.reason), timeout=2.0)
        except (TimeoutError, websockets.ConnectionClosed, OSError):
            pass


class WebsocketInputTransport(BoundedInput, BaseInputTransport):
    """Reads the client's frames, checks them, and feeds audio to the pipeline.

    Bounded like every input (:mod:`bot.transports.overload`): received audio waits in an
    :class:`AudioRing` of ``max_input_lag_secs``; while pipecat's input queue is behind, the pump holds
    back and the ring drops the oldest audio (reported as ``audio.dropped`` in the audit log and counted
    in /metrics) rather than piling up behind a busy session."""

    drop_source = "websocket"

    def __init__(self, transport: WebsocketTransport, params: TransportParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._t = transport
        self._ready = asyncio.Event()
        self._ring: AudioRing[InputAudioRawFrame] = AudioRing(transport.limits.max_input_lag_secs, self.drops,
                                                              wake=self._ready.set, reason="pipeline-behind")
        self._reader: asyncio.Task | None = None
        self._pump: asyncio.Task | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._reader is None:
            self._reader = self.create_task(self._read(), name="ws-reader")
            self._pump = self.create_task(self._feed(), name="ws-pump")

    async def _stop_tasks(self) -> None:
        for task in (self._reader, self._pump):
            if task is not None:
                await self.cancel_task(task)
        self._reader = self._pump = None
        self.drops.flush()

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_tasks()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_tasks()
        await super().cancel(frame)

    async def _read(self) -> None:
        t = self._t
        limits = t.limits
        window_start, window_count = time.monotonic(), 0
        t.clock.start()
        try:
            async for message in t.conn:
                now = time.monotonic()
                if now - window_start >= 1.0:
                    window_start, window_count = now, 0
                window_count += 1
                if window_count > limits.max_messages_per_sec:
                    await t.close(CloseReason(POLICY, f"more than {limits.max_messages_per_sec} messages per "
                                                      "second: send 20 ms (or longer) audio frames"))
                    return
                if isinstance(message, str):
                    await t.close(CloseReason(UNSUPPORTED, "text messages are not part of the protocol: send "
                                                           "pipecat protobuf frames as binary messages"))
                    return
                try:
                    frame = await t.serializer.deserialize(message)
                except (DecodeError, ValueError, TypeError):
                    frame = None
                if frame is None:
                    await t.close(CloseReason(INVALID_DATA, "malformed frame: expected a pipecat protobuf Frame "
                                                            "(audio, message or interruption)"))
                    return
                if isinstance(frame, InputAudioRawFrame):
                    problem = self._check_audio(frame)
                    if problem:
                        await t.close(CloseReason(UNSUPPORTED, problem))
                        return
                    t.counters.audio_in_secs += len(frame.audio) / 2 / limits.sample_rate
                    if t.counters.audio_in_secs > (now - t.opened_at) + limits.max_audio_burst_secs:
                        await t.close(CloseReason(POLICY, "audio arrives faster than real time: send it as it "
                                                          "is recorded"))
                        return
                    self._ring.put(frame, len(frame.audio) / 2 / limits.sample_rate)
                elif isinstance(frame, InputTransportMessageFrame):
                    await self.broadcast_frame(InputTransportMessageFrame, message=frame.message)
                elif isinstance(frame, InterruptionFrame):
                    continue  # the bot decides when it is interrupted (VAD), not the client
                else:
                    await t.close(CloseReason(UNSUPPORTED, f"{type(frame).__name__} is not accepted from clients: "
                                                           "send audio frames (and JSON messages)"))
                    return
        except websockets.ConnectionClosed:
            pass
        t._mark_closed(CloseReason(GOING_AWAY, "client disconnected"))

    def _check_audio(self, frame: InputAudioRawFrame) -> str | None:
        rate = self._t.limits.sample_rate
        if frame.sample_rate != rate or frame.num_channels != 1:
            return (f"audio must be {rate} Hz mono 16-bit PCM (got {frame.sample_rate} Hz, "
                    f"{frame.num_channels} channel(s)): resample before sending")
        if not frame.audio or len(frame.audio) % 2:
            return "audio frame is empty or not whole 16-bit samples"
        return None

    async def _feed(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while len(self._ring):
                if self.behind:  # pipecat has not taken what it got: hold back (the ring drops the oldest)
                    await asyncio.sleep(0.02)
                    continue
                frame = self._ring.pop()
                if frame is not None:
                    await self.push_audio_frame(frame)


class WebsocketOutputTransport(BaseOutputTransport):
    """Sends the bot's audio paced in real time, the interruption frame on barge-in, and posted messages."""

    def __init__(self, transport: WebsocketTransport, params: TransportParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._t = transport
        self._cursor = 0.0
        self._outbox: asyncio.Queue = asyncio.Queue(maxsize=512)
        self._sender: asyncio.Task | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._sender is None:
            self._sender = self.create_task(self._send_posted(), name="ws-sender")

    async def _stop_sender(self) -> None:
        if self._sender is not None:
            await self.cancel_task(self._sender)
            self._sender = None
        while not self._outbox.empty():
            self._outbox.get_nowait().close()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        while not self._outbox.empty() and not self._t.closed.is_set():
            await self._outbox.get_nowait()
        await self._stop_sender()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_sender()

    def post(self, coro) -> None:
        try:
            self._outbox.put_nowait(coro)
        except asyncio.QueueFull:
            coro.close()
            self._t.close_soon(CloseReason(POLICY, "client stopped reading: too many messages waiting to be sent"))

    async def _send_posted(self) -> None:
        while True:
            coro = await self._outbox.get()
            await coro

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._cursor = 0.0
            await self._t.send_frame(InterruptionFrame())

    async def send_message(self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame) -> None:
        await self._t.send_frame(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        out = OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels)
        if not await self._t.send_frame(out):
            return False
        secs = len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
        self._t.counters.audio_out_secs += secs
        # Pace like a sound card: the client never holds more than audio_lead_secs of unplayed audio.
        now = time.monotonic()
        self._cursor = max(self._cursor, now) + secs
        ahead = self._cursor - self._t.limits.audio_lead_secs - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        return True
