"""A voicebot client over WebSocket speaking pipecat's protobuf frames, for tests and ``benchmarks/load.py``.

It sends audio the way a microphone would (20 ms frames, in real time) and plays what it receives the
way a speaker would: a reply starts playing ``JITTER_BUFFER_SECS`` after its first frame arrives and each
further frame plays right after the previous one. A frame that arrives after the previous one finished
playing, inside one reply, is an *underrun* (an audible gap). Everything is serialized with pipecat's own ``ProtobufFrameSerializer``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from bot.audio import float_to_int16, int16_to_float, pcm_to_int16, resample, to_pcm

BLOCK_SECS = 0.02
JITTER_BUFFER_SECS = 0.1
"""Like any network audio player, the client starts a reply this long after its first frame arrives, so
network and scheduling jitter up to this much is not heard."""
UNDERRUN_TOLERANCE_SECS = 0.005
REPLY_GAP_SECS = 1.0
"""Silence longer than this between bot audio frames separates two replies (not an underrun)."""


@dataclass
class Played:
    start: float
    """Seconds since the client connected at which this frame starts playing."""
    samples: np.ndarray
    rate: int


@dataclass
class ClientLog:
    played: list[Played] = field(default_factory=list)
    transcriptions: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    interruptions: list[float] = field(default_factory=list)
    underruns: list[float] = field(default_factory=list)
    """Seconds of each gap inside a reply."""
    close_code: int | None = None
    close_reason: str = ""
    arrivals: list[float] = field(default_factory=list)
    """Arrival time (seconds since connecting) of every bot audio frame."""

    def first_audio_after(self, t: float) -> float | None:
        """Arrival of the first bot audio frame at or after ``t``."""
        return next((a for a in self.arrivals if a >= t), None)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def turns(self) -> list[dict[str, Any]]:
        return self.of_type("turn")

    def track(self, rate: int = 24000) -> np.ndarray:
        """What the client played, as one float32 track from the first bot audio on."""
        if not self.played:
            return np.zeros(0, dtype=np.float32)
        t0 = self.played[0].start
        end = max(p.start + len(p.samples) / p.rate for p in self.played)
        out = np.zeros(int((end - t0) * rate) + 1, dtype=np.float32)
        for p in self.played:
            s = resample(int16_to_float(p.samples), p.rate, rate)
            i = int(round((p.start - t0) * rate))
            out[i:i + len(s)] += s[: len(out) - i]
        return out


class VoiceClient:
    def __init__(self, url: str, *, headers: dict[str, str] | None = None, origin: str | None = None) -> None:
        self.url = url
        self._headers = headers or {}
        self._origin = origin
        self.serializer = ProtobufFrameSerializer()
        self.log = ClientLog()
        self.ws: websockets.ClientConnection | None = None
        self.t0 = 0.0
        self._cursor = 0.0
        self._last_arrival = -1e9
        self._reader: asyncio.Task | None = None
        self.closed = asyncio.Event()
        self.session: dict[str, Any] | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def connect(self) -> VoiceClient:
        self.ws = await websockets.connect(self.url, additional_headers=self._headers, origin=self._origin,
                                           max_size=None, open_timeout=30)
        self.t0 = time.monotonic()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aenter__(self) -> VoiceClient:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)

    async def wait_session(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.session is None:
            if self.closed.is_set():
                raise RuntimeError(f"closed before the session started: {self.log.close_code} {self.log.close_reason}")
            if time.monotonic() > deadline:
                raise TimeoutError("no session message")
            await asyncio.sleep(0.02)
        return self.session

    async def send_audio(self, samples: np.ndarray, rate: int = 16000) -> None:
        """Stream float32 mono ``samples`` in 20 ms frames at real-time pace."""
        block = int(rate * BLOCK_SECS)
        pcm = float_to_int16(samples)
        start = time.monotonic()
        for i, at in enumerate(range(0, len(pcm), block)):
            chunk = pcm[at:at + block]
            if len(chunk) < block:
                chunk = np.pad(chunk, (0, block - len(chunk)))
            if not await self.send_frame(OutputAudioRawFrame(audio=to_pcm(chunk), sample_rate=rate, num_channels=1)):
                return
            delay = start + (i + 1) * BLOCK_SECS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def send_silence(self, secs: float, rate: int = 16000) -> None:
        await self.send_audio(np.zeros(int(secs * rate), dtype=np.float32), rate)

    async def send_frame(self, frame) -> bool:
        payload = await self.serializer.serialize(frame)
        return await self.send_raw(payload)

    async def send_raw(self, payload: bytes | str) -> bool:
        if self.closed.is_set() or self.ws is None:
            return False
        try:
            await self.ws.send(payload)
        except websockets.ConnectionClosed:
            return False
        return True

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                self._on_message(await self.serializer.deserialize(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.log.close_code = self.ws.close_code
            self.log.close_reason = self.ws.close_reason or ""
            self.closed.set()

    def _on_message(self, frame) -> None:
        now = self.now()
        if isinstance(frame, InputAudioRawFrame):
            samples = pcm_to_int16(frame.audio, frame.num_channels)
            self.log.arrivals.append(now)
            dry = now - self._cursor
            new_reply = now - self._last_arrival >= REPLY_GAP_SECS or self._cursor == 0
            if not new_reply and dry > UNDERRUN_TOLERANCE_SECS:
                self.log.underruns.append(dry)
            start = now + JITTER_BUFFER_SECS if new_reply or dry > 0 else self._cursor
            self._cursor = start + len(samples) / frame.sample_rate
            self._last_arrival = now
            self.log.played.append(Played(start, samples, frame.sample_rate))
        elif isinstance(frame, InterruptionFrame):
            self.log.interruptions.append(now)
            # The speaker drops what it had queued: nothing after "now" is played.
            kept = []
            for p in self.log.played:
                if p.start >= now:
                    continue
                n = int((now - p.start) * p.rate)
                kept.append(Played(p.start, p.samples[:n], p.rate) if n < len(p.samples) else p)
            self.log.played = kept
            self._cursor = now
        elif isinstance(frame, TranscriptionFrame):
            self.log.transcriptions.append(frame.text)
        elif isinstance(frame, InputTransportMessageFrame):
            msg = frame.message
            if isinstance(msg, str):
                msg = json.loads(msg)
            self.log.messages.append(msg)
            if msg.get("type") == "session":
                self.session = msg
