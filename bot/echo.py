"""Echo policy: what the bot does about hearing itself through open speakers.

A bot that hears its own voice through the microphone takes it for the user and interrupts itself.
:class:`EchoPolicy` is a pipecat processor placed right after ``transport.input()``; it works the same
for every transport, because the output transport tells it when the bot speaks: pipecat's
``BaseOutputTransport`` pushes ``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame`` upstream as
well as downstream, and upstream frames reach this processor.

Policies (``transport.echo``):

* ``half-duplex``: while the bot speaks, and for a short tail after (room echo plus whatever the
  device still had buffered), the microphone audio is replaced with silence. Safe with any speakers;
  the user cannot interrupt the bot.
* ``barge-in``: the audio is passed on untouched; the user can interrupt. For headphones (and files).
* ``aec``: acoustic echo cancellation with WebRTC's AEC3 (from the ``livekit`` package): the far end
  (what the speaker plays, handed over by the transport through an :class:`EchoReference`) is
  subtracted from the microphone signal, so the user can interrupt through open speakers. The canceller
  runs in a process of its own (:mod:`bot.aec`: livekit's native runtime must not live in a process
  that finalizes).
* ``auto``: the transport's ``default_echo`` (microphone: half-duplex), else barge-in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
)
from loguru import logger
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.aec import WebRtcEchoCanceller
from bot.errors import VoicebotError

POLICIES = ("half-duplex", "barge-in", "aec")
CAPTURED_AT = "captured_at"
"""``InputAudioRawFrame.metadata`` key: ``time.monotonic()`` when the device delivered the block. With it the
canceller pairs each microphone block with the speaker audio handed over before it, however late the
event loop gets to the block (without it: all speaker audio handed over so far)."""


def resolve_policy(configured: str, transport: Any) -> str:
    """The policy that applies: ``auto`` becomes the transport's ``default_echo`` (else barge-in)."""
    if configured != "auto":
        return configured
    return getattr(transport, "default_echo", "barge-in")


class EchoReference:
    """The far-end signal: audio exactly as it is handed to the speaker, passed from the audio thread to
    the echo canceller. Thread-safe; keeps at most ``max_secs`` if nobody drains it."""

    def __init__(self, max_secs: float = 2.0) -> None:
        self._chunks: deque[tuple[float, bytes, int]] = deque()
        self._lock = threading.Lock()
        self._max_secs = max_secs
        self._secs = 0.0

    def push(self, pcm: bytes, rate: int, t: float | None = None) -> None:
        """Mono int16 audio given to the speaker at ``t`` (``time.monotonic()``; default: now)."""
        t = time.monotonic() if t is None else t
        with self._lock:
            self._chunks.append((t, pcm, rate))
            self._secs += len(pcm) / 2 / rate
            while self._secs > self._max_secs and self._chunks:
                _, old, old_rate = self._chunks.popleft()
                self._secs -= len(old) / 2 / old_rate

    def drain(self, until: float | None = None) -> list[tuple[bytes, int]]:
        """The audio handed over (up to ``until``, monotonic seconds), oldest first; it is removed."""
        out = []
        with self._lock:
            while self._chunks and (until is None or self._chunks[0][0] <= until):
                _, pcm, rate = self._chunks.popleft()
                self._secs -= len(pcm) / 2 / rate
                out.append((pcm, rate))
        return out


class EchoPolicy(FrameProcessor):
    """Applies the echo policy to the microphone audio; every other frame passes untouched."""

    def __init__(self, policy: str, *, tail_secs: float = 0.3, reference: EchoReference | None = None,
                 canceller: WebRtcEchoCanceller | None = None, **kwargs: Any) -> None:
        super().__init__(name=f"echo-{policy}", **kwargs)
        if policy not in POLICIES:
            raise VoicebotError(f"transport.echo {policy!r} is unknown: use one of auto, {', '.join(POLICIES)}")
        if policy == "aec" and (reference is None or canceller is None):
            raise VoicebotError("transport.echo = aec needs a transport that reports what its speaker plays "
                                "(the microphone does; files have no echo): use barge-in or half-duplex")
        self.policy = policy
        self.tail_secs = tail_secs
        self._reference = reference
        self._canceller = canceller
        self.bot_speaking = False
        self._unmute_at = 0.0
        self.muted_secs = 0.0
        """Seconds of microphone audio replaced by silence so far (half-duplex)."""

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._canceller is not None:
            await asyncio.to_thread(self._canceller.close)  # waits for the child: not on the event loop

    @property
    def muted(self) -> bool:
        return self.bot_speaking or time.monotonic() < self._unmute_at

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            if self.bot_speaking:
                self._unmute_at = time.monotonic() + self.tail_secs
            self.bot_speaking = False
        elif isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            frame = await self._apply(frame)
            if frame is None:
                return
        await self.push_frame(frame, direction)

    async def _apply(self, frame: InputAudioRawFrame) -> InputAudioRawFrame | None:
        if self.policy == "half-duplex" and self.muted:
            self.muted_secs += len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
            return self._replace(frame, bytes(len(frame.audio)))
        if self.policy == "aec" and frame.num_channels == 1:
            assert self._reference is not None and self._canceller is not None
            for pcm, rate in self._reference.drain(frame.metadata.get(CAPTURED_AT)):
                self._canceller.far(pcm, rate)
            if frame.sample_rate != self._canceller.rate:
                return frame
            try:  # a round trip to the canceller's process: off the event loop, bounded (bot/aec.py)
                cleaned = await asyncio.to_thread(self._canceller.near, frame.audio)
            except VoicebotError as exc:
                self._fall_back(str(exc))
                return await self._apply(frame)
            return self._replace(frame, cleaned) if cleaned else None
        return frame

    def _fall_back(self, reason: str) -> None:
        """The canceller failed mid-session: keep the bot from hearing itself (half-duplex) rather than stop."""
        logger.warning(f"{reason}; echo policy falls back to half-duplex for the rest of this session")
        self.policy = "half-duplex"
        canceller, self._canceller = self._canceller, None
        if canceller is not None:
            threading.Thread(target=canceller.close, name="voicebot-aec-close", daemon=True).start()

    @staticmethod
    def _replace(frame: InputAudioRawFrame, audio: bytes) -> InputAudioRawFrame:
        new = InputAudioRawFrame(audio=audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels)
        new.transport_source = frame.transport_source
        new.metadata = dict(frame.metadata)
        return new


def make_echo_policy(settings: Any, transport: Any) -> EchoPolicy:
    """The echo processor for ``settings`` (the whole Settings) on ``transport``."""
    cfg = settings.transport
    policy = resolve_policy(cfg.echo, transport)
    tail = cfg.echo_tail_secs + float(getattr(transport, "echo_latency_secs", 0.0) or 0.0)
    if policy != "aec":
        return EchoPolicy(policy, tail_secs=tail)
    reference = getattr(transport, "echo_reference", None)
    if reference is None:
        raise VoicebotError("transport.echo = aec needs a transport that reports what its speaker plays "
                            "(the microphone does; files have no echo): use barge-in or half-duplex")
    return EchoPolicy(policy, tail_secs=tail, reference=reference,
                      canceller=WebRtcEchoCanceller(cfg.sample_rate))
