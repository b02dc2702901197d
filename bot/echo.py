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
  subtracted from the microphone signal, so the user can interrupt through open speakers.
* ``auto``: the transport's ``default_echo`` (microphone: half-duplex), else barge-in.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

import numpy as np
import soxr
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.errors import VoicebotError

POLICIES = ("half-duplex", "barge-in", "aec")
CAPTURED_AT = "captured_at"
"""``InputAudioRawFrame.metadata`` key: ``time.monotonic()`` when the device delivered the block. With it the
canceller pairs each microphone block with the speaker audio handed over before it, however late the
event loop gets to the block (without it: all speaker audio handed over so far)."""
AEC_FRAME_SECS = 0.01
"""WebRTC's audio processing works on 10 ms frames."""
START_TIMEOUT_SECS = 30.0
"""How long the echo canceller's process may take to start (importing livekit on a busy CPU)."""


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


def _load_apm():
    try:
        from livekit import rtc
    except ImportError as exc:  # pragma: no cover - livekit is a dependency
        raise VoicebotError(f"transport.echo = aec needs the livekit package ({exc}): `pip install livekit`, "
                            "or use transport.echo = half-duplex") from None
    return rtc


class _Apm:
    """WebRTC's audio processing module (AEC3 echo canceller + high-pass filter) on mono int16 audio, in this
    process. Used inside the AEC process only (:func:`_apm_process`)."""

    def __init__(self, rate: int, noise_suppression: bool, delay_ms: int | None) -> None:
        rtc = _load_apm()
        self._rtc = rtc
        self.rate = rate
        self._n = int(rate * AEC_FRAME_SECS)
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=noise_suppression,
                                              high_pass_filter=True, auto_gain_control=False)
        self._delay_ms = delay_ms
        self._far = np.zeros(0, dtype=np.int16)
        self._near = np.zeros(0, dtype=np.int16)
        self._resamplers: dict[int, soxr.ResampleStream] = {}

    def far(self, pcm: bytes, rate: int) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        if rate != self.rate:
            rs = self._resamplers.get(rate)
            if rs is None:
                rs = self._resamplers[rate] = soxr.ResampleStream(rate, self.rate, 1, dtype="int16")
            samples = rs.resample_chunk(samples)
        self._far = np.concatenate([self._far, samples.astype(np.int16, copy=False)])
        n = self._n
        while len(self._far) >= n:
            frame = self._rtc.AudioFrame(self._far[:n].tobytes(), self.rate, 1, n)
            self._apm.process_reverse_stream(frame)
            self._far = self._far[n:]

    def near(self, pcm: bytes) -> bytes:
        self._near = np.concatenate([self._near, np.frombuffer(pcm, dtype="<i2")])
        n = self._n
        out = []
        while len(self._near) >= n:
            frame = self._rtc.AudioFrame(self._near[:n].tobytes(), self.rate, 1, n)
            if self._delay_ms is not None:
                self._apm.set_stream_delay_ms(self._delay_ms)
            self._apm.process_stream(frame)
            out.append(frame.data.tobytes())
            self._near = self._near[n:]
        return b"".join(out)


def _apm_process(conn: Any, rate: int, noise_suppression: bool, delay_ms: int | None) -> None:
    """The AEC process: runs an :class:`_Apm` for its parent until the pipe closes, then ``os._exit``.

    livekit's native runtime (tokio threads in ``liblivekit_ffi.so``) forwards its log records to Python
    from a worker thread once a second; if that lands while the interpreter is finalizing, the thread is
    unwound through Rust code and the process aborts ("panic in a function that cannot unwind", issue 11).
    Here the runtime lives only in this process, which never finalizes: it leaves with ``os._exit``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent; it closes the pipe
    code = 0
    try:
        try:
            apm = _Apm(rate, noise_suppression, delay_ms)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            conn.send(("error", str(exc)))
            return
        conn.send(("ready", ""))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "far":
                apm.far(msg[1], msg[2])
            elif msg[0] == "near":
                for pcm, far_rate in msg[2]:
                    apm.far(pcm, far_rate)
                conn.send(apm.near(msg[1]))
            else:  # "close"
                break
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        os._exit(code)


class WebRtcEchoCanceller:
    """WebRTC's audio processing module (AEC3 echo canceller + high-pass filter) on mono int16 audio.

    ``far()`` takes what the speaker played (any rate), ``near()`` what the microphone heard (at
    ``rate``) and returns it with the echo removed. Feed the far end before the near end that holds
    its echo; AEC3 finds the delay between them itself (``delay_ms`` is only a starting hint).

    The module runs in a child process of its own (:func:`_apm_process`), so livekit's native runtime
    never lives in a process that finalizes (that is where it panicked); the far end is sent along with
    the next near-end block, one round trip per microphone block. :meth:`close` (also on garbage
    collection and at exit) ends the process; it also ends when this process does.
    """

    def __init__(self, rate: int = 16000, *, noise_suppression: bool = False, delay_ms: int | None = None) -> None:
        _load_apm()  # a missing package fails here, in one line
        self.rate = rate
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_apm_process, args=(child, rate, noise_suppression, delay_ms),
                                 name="voicebot-aec", daemon=True)
        self._proc.start()
        child.close()
        self._pending_far: list[tuple[bytes, int]] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            status, detail = self._conn.recv() if self._conn.poll(START_TIMEOUT_SECS) else ("error", "no answer")
        except (EOFError, OSError) as exc:
            status, detail = "error", str(exc) or "it exited"
        if status != "ready":
            self.close()
            raise VoicebotError(f"the echo canceller did not start ({detail}): use transport.echo = half-duplex")
        self._finalizer = weakref.finalize(self, _end_process, self._conn, self._proc)

    def far(self, pcm: bytes | np.ndarray, rate: int) -> None:
        data = pcm.astype("<i2", copy=False).tobytes() if isinstance(pcm, np.ndarray) else bytes(pcm)
        with self._lock:
            self._pending_far.append((data, rate))

    def near(self, pcm: bytes) -> bytes:
        with self._lock:
            far, self._pending_far = self._pending_far, []
            if self._closed:
                raise VoicebotError("the echo canceller is closed")
            try:
                self._conn.send(("near", bytes(pcm), far))
                return self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise VoicebotError("the echo canceller process stopped: use transport.echo = half-duplex") from None

    def close(self) -> None:
        """End the canceller's process (idempotent)."""
        self._closed = True
        _end_process(self._conn, self._proc)


def _end_process(conn: Any, proc: Any) -> None:
    with contextlib.suppress(Exception):
        conn.send(("close",))
    with contextlib.suppress(Exception):
        conn.close()
    with contextlib.suppress(Exception):
        proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=1)


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
            self._canceller.close()

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
            frame = self._apply(frame)
            if frame is None:
                return
        await self.push_frame(frame, direction)

    def _apply(self, frame: InputAudioRawFrame) -> InputAudioRawFrame | None:
        if self.policy == "half-duplex" and self.muted:
            self.muted_secs += len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
            return self._replace(frame, bytes(len(frame.audio)))
        if self.policy == "aec" and frame.num_channels == 1:
            assert self._reference is not None and self._canceller is not None
            for pcm, rate in self._reference.drain(frame.metadata.get(CAPTURED_AT)):
                self._canceller.far(pcm, rate)
            if frame.sample_rate != self._canceller.rate:
                return frame
            cleaned = self._canceller.near(frame.audio)
            return self._replace(frame, cleaned) if cleaned else None
        return frame

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
