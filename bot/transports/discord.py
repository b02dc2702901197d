"""Discord transport: the voice channel plays the microphone and the speaker of one session.

Like :mod:`bot.transports.file`, input is pushed in 20 ms blocks at real-time pace and the output blocks like
a sound card, so the rest of the bot cannot tell it from a microphone. What is Discord-specific stays here
and in :mod:`bot.discord`:

* **In.** py-cord calls the receive sink on its packet-router thread with one decoded 20 ms frame (48 kHz
  stereo) per user; :meth:`DiscordTransport.receive` hands it to the event loop with
  ``loop.call_soon_threadsafe`` and nothing else. On the loop, each user has a
  :class:`~bot.discord.audio.UserStream` (16 kHz mono, silence gaps filled). Every 20 ms the input transport
  asks :class:`~bot.discord.floor.FloorControl` who holds the floor and pushes 20 ms of that user's audio
  as a ``UserAudioRawFrame`` (``user_id`` = their label, which pipecat's STT copies onto the transcript),
  or silence when nobody does. When the floor changes hands it first pushes a
  :class:`~bot.frames.SpeakerFrame`, so the turn tracker labels the turns that follow.
* **Out.** Bot audio (24 kHz mono) becomes 48 kHz stereo 3840-byte frames on a
  :class:`~bot.discord.audio.PlaybackQueue` that py-cord's player thread reads every 20 ms. An
  ``InterruptionFrame`` (barge-in) flushes the queue at once; the end of an utterance flushes the
  resampler and zero-pads the last frame.
* **Floor and pipeline.** The input transport sees the frames pipecat sends upstream (VAD, bot speaking)
  and the :class:`~bot.attention.gate.ReplyDecisionFrame` of the attention gate, and keeps the floor with its
  holder while their turn is being transcribed, answered or played.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    UserAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bot.discord.audio import PlaybackQueue, FrameSlicer, UserStream
from bot.discord.floor import FloorControl
from bot.attention.gate import ReplyDecisionFrame
from bot.frames import SpeakerFrame
from bot.transports.file import SessionClock
from bot.transports.paced import BLOCK_SECS, PacedInputTransport

log = logging.getLogger(__name__)

DEVICE_BUFFER_SECS = 0.06
"""How far ahead of real time the output hands audio to the player (its "device buffer")."""
CATCH_UP_SECS = 0.1
"""When the floor holder has more than this buffered (speech that waited for the floor, a burst after
jitter), two or three blocks are pushed per tick until the stream is back on real time."""
STT_WAIT_SECS = 3.0
"""After the holder's speech stops, the floor waits this long at most for the transcript."""
REPLY_WAIT_SECS = 10.0
"""After a transcript that will be answered, the floor waits this long at most for the bot to start talking."""


class DiscordInputTransport(PacedInputTransport):
    drop_source = "discord"
    resync_after_secs = 1.0  # a live call: after a blocked second, don't burst to catch up

    def __init__(self, owner: DiscordTransport, params: TransportParams, **kwargs) -> None:
        super().__init__(owner.clock, params, feeder_name="discord-input-feeder", **kwargs)
        self._owner = owner
        self._tick_failed = False
        self.streams: dict[int, UserStream] = {}
        self.labels: dict[int, str] = {}
        self.floor = FloorControl(release_secs=owner.release_secs)
        self.vad_speaking = False
        self.bot_speaking = False
        self._stt_until = 0.0
        self._reply_until = 0.0
        self.blocks_pushed = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._owner._loop = asyncio.get_running_loop()

    async def _stop_feeder(self) -> None:
        self._owner._loop = None
        await super()._stop_feeder()

    # -- audio in (event loop thread) -------------------------------------------------------------

    def on_voice(self, user_id: int, label: str, pcm: bytes, timestamp: int | None, arrival: float) -> None:
        stream = self.streams.get(user_id)
        if stream is None:
            stream = self.streams[user_id] = UserStream(self.sample_rate or 16000)
        self.labels[user_id] = label
        stream.push(pcm, timestamp=timestamp, arrival=arrival)

    def drop_user(self, user_id: int) -> None:
        """Drop a user's buffered audio; they lose the floor if they held it."""
        self.streams.pop(user_id, None)
        self.floor.release(user_id)

    def busy(self, now: float) -> bool:
        """Whether the pipeline is still on the floor holder's turn."""
        extra = self._owner.pipeline_busy
        return (self.vad_speaking or self.bot_speaking or now < self._stt_until or now < self._reply_until
                or (extra is not None and bool(extra())))

    async def tick(self, i: int, block: int, silence: bytes) -> None:
        try:
            await self._tick(time.monotonic(), block, silence)
        except Exception:  # noqa: BLE001 - a deaf bot is worse than one bad block
            if not self._tick_failed:
                log.exception("discord input: a 20 ms block failed; going on")
            self._tick_failed = True

    async def _tick(self, now: float, block: int, silence: bytes) -> None:
        change = self.floor.update(now, self.streams, self.busy(now))
        holder = self.floor.holder
        if change is not None and holder is not None:
            label = self.labels.get(holder, f"user:{holder}")
            await self.push_frame(SpeakerFrame(speaker=label))
            self._owner._floor_changed(label)
        elif change is not None:
            self._owner._floor_changed(None)
        for user_id, stream in self.streams.items():
            if user_id != holder:
                stream.wait_for_floor(now, self._owner.lookback_secs)
        stream = self.streams.get(holder) if holder is not None else None  # (they may have left meanwhile)
        if stream is None:
            await self._push(InputAudioRawFrame(audio=silence, sample_rate=self.sample_rate, num_channels=1))
            return
        label = self.labels.get(holder, f"user:{holder}")
        backlog = stream.buffered_secs
        blocks = 1 if backlog <= CATCH_UP_SECS else 2 if backlog <= 1.0 else 3
        for _ in range(blocks):
            pcm = stream.read(block).tobytes()
            await self._push(UserAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1,
                                               user_id=label))

    async def _push(self, frame: InputAudioRawFrame) -> None:
        self.blocks_pushed += 1
        await self.push_audio_frame(frame)

    # -- what the pipeline says upstream ----------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        now = time.monotonic()
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.vad_speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self.vad_speaking = False
            self._stt_until = now + STT_WAIT_SECS
        elif isinstance(frame, ReplyDecisionFrame):
            self._stt_until = 0.0
            if frame.reply:
                self._reply_until = now + REPLY_WAIT_SECS
        elif isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
            self._reply_until = 0.0
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False


class DiscordOutputTransport(BaseOutputTransport):
    """Hands the bot's audio to the player as 3840-byte frames, paced like a sound card."""

    def __init__(self, owner: DiscordTransport, params: TransportParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._owner = owner
        self._slicer: FrameSlicer | None = None
        self._cursor = 0.0
        self.flushed_frames = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._slicer = FrameSlicer(self.sample_rate)
        await self.set_transport_ready(frame)

    def _queue(self, frames: list[bytes]) -> None:
        if frames:
            self._owner.playback.put(frames)
            if self._owner.on_playback is not None:
                self._owner.on_playback()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._slicer is None:
            self._slicer = FrameSlicer(frame.sample_rate)
        self._queue(self._slicer.feed(frame.audio, frame.sample_rate, frame.num_channels))
        loop = asyncio.get_running_loop()
        now = loop.time()
        secs = len(frame.audio) / 2 / max(frame.num_channels, 1) / frame.sample_rate
        self._cursor = max(now, self._cursor) + secs
        ahead = self._cursor - DEVICE_BUFFER_SECS - now
        if ahead > 0:
            await asyncio.sleep(ahead)
        return True

    def flush(self) -> int:
        """Barge-in: drop everything not yet played, and what the resampler holds."""
        dropped = self._owner.playback.flush()
        if self._slicer is not None:
            self._slicer.reset()
        self._cursor = 0.0
        self.flushed_frames += dropped
        return dropped

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self.flush()
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if isinstance(frame, BotStoppedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM \
                and self._slicer is not None:
            # End of an utterance: the resampler's tail and the last partial frame, zero-padded.
            self._queue(self._slicer.flush())
        await super().push_frame(frame, direction)


class DiscordTransport(BaseTransport):
    """One voice channel session. py-cord's sink calls :meth:`receive`; its player reads :attr:`playback`.

    ``pipeline_busy``: an extra "the pipeline is still on this turn" predicate (the app passes the turn
    tracker's ``llm_running``). ``on_playback``: called on the event loop whenever frames were queued (the app makes
    sure py-cord's player is running).
    """

    default_echo = "barge-in"
    """Discord clients cancel their own echo and the bot never receives its own voice, so the user can
    always interrupt (see bot/echo.py; ``transport.echo = half-duplex`` turns barge-in off)."""

    def __init__(self, *, in_rate: int = 16000, out_rate: int = 24000, release_secs: float = 1.0,
                 lookback_secs: float = 4.0, pipeline_busy: Callable[[], bool] | None = None,
                 on_playback: Callable[[], None] | None = None,
                 on_floor: Callable[[str | None], None] | None = None) -> None:
        super().__init__()
        self.clock = SessionClock()
        self.release_secs = release_secs
        self.lookback_secs = lookback_secs
        self.pipeline_busy = pipeline_busy
        self.on_playback = on_playback
        self.on_floor = on_floor
        self.playback = PlaybackQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._params = TransportParams(
            audio_in_enabled=True, audio_in_sample_rate=in_rate,
            audio_out_enabled=True, audio_out_sample_rate=out_rate,
            audio_out_end_silence_secs=0,
        )
        self._input = DiscordInputTransport(self, self._params, name="discord-input")
        self._output = DiscordOutputTransport(self, self._params, name="discord-output")
        self.frames_received = 0

    def input(self) -> DiscordInputTransport:
        return self._input

    def output(self) -> DiscordOutputTransport:
        return self._output

    @property
    def running(self) -> bool:
        return self._loop is not None

    def receive(self, user_id: int, label: str, pcm: bytes, *, timestamp: int | None = None,
                arrival: float | None = None) -> bool:
        """One decoded 20 ms frame of ``user_id`` (48 kHz stereo s16le). Safe from any thread: this is what
        the receive sink calls on py-cord's packet-router thread. Returns False (frame dropped) before the
        input has started or after it stopped."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        when = time.monotonic() if arrival is None else arrival
        try:
            loop.call_soon_threadsafe(self._input.on_voice, user_id, label, bytes(pcm), timestamp, when)
        except RuntimeError:  # the loop closed between the check and the call
            return False
        self.frames_received += 1
        return True

    def drop_user(self, user_id: int) -> None:
        """Drop ``user_id``'s buffered audio and floor (they left, or asked to be forgotten). Loop thread."""
        self._input.drop_user(user_id)

    @property
    def floor_holder(self) -> str | None:
        holder = self._input.floor.holder
        return None if holder is None else self._input.labels.get(holder, f"user:{holder}")

    def _floor_changed(self, label: str | None) -> None:
        if self.on_floor is not None:
            self.on_floor(label)
