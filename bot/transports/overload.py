"""Bounded input: when audio arrives faster than the pipeline takes it, the oldest is dropped, never hoarded.

A microphone delivers audio whether or not the bot keeps up. Two things can make input outpace the
pipeline: a capture device that delivers faster than real time (issue 11: an ALSA ``file`` PCM on a regular
file grew the process to 12 GB in 10 minutes), and a pipeline that falls behind (the CPU is busy, the event
loop was blocked). Every input transport therefore holds at most a bounded amount of audio, in two places:

* **before the pipeline**: :class:`AudioRing`, a thread-safe FIFO bounded in seconds between the device's
  thread and the event loop (the microphone), and the paced feeders' skip-ahead when they fall behind
  (file, replay, Discord: :mod:`bot.transports.paced`). Audio is forwarded at most at real-time pace
  (plus a short catch-up burst), so a device that runs fast cannot flood the pipeline either;
* **inside the input transport**: :class:`BoundedInput` counts the blocks handed to pipecat's input queue
  that its audio task has not passed on yet; while more than :data:`MAX_BACKLOG_SECS` wait there, the
  feeder does not add more (and its own bound drops the oldest).

Whatever is dropped is reported by a :class:`DropReporter`: one logged warning at most every
:data:`REPORT_EVERY_SECS` (not one per block), and an :class:`AudioDropped` event to its listeners, which
the session writes to the audit log as ``audio.dropped`` (docs/audit-log.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection

MAX_BUFFER_SECS = 2.0
"""Audio an input holds before the pipeline at most; beyond it the oldest is dropped."""
MAX_BACKLOG_SECS = 1.0
"""Audio waiting in pipecat's input queue at most before the feeder holds back."""
CATCH_UP_SECS = 0.5
"""How far ahead of real time a feeder may push to catch up after a hiccup."""
REPORT_EVERY_SECS = 5.0
"""At most one warning (and one audit record) per this many seconds while audio is being dropped."""

DropReason = Literal["input-faster-than-real-time", "pipeline-behind"]


@dataclass(frozen=True)
class AudioDropped:
    """Audio an input dropped since the last report (the ``data`` of an ``audio.dropped`` audit record)."""

    source: str
    """Which input: ``microphone``, ``file``, ``replay``, ``discord``."""
    reason: DropReason
    secs: float
    """Seconds of audio dropped since the previous report."""
    total_secs: float
    """Seconds dropped since the session started."""
    period_secs: float
    """Wall-clock seconds this report covers."""

    def as_record(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "secs": round(self.secs, 3),
                "total_secs": round(self.total_secs, 3), "period_secs": round(self.period_secs, 3)}


class DropReporter:
    """Counts dropped audio (from any thread) and reports it, rate-limited."""

    def __init__(self, source: str, every_secs: float = REPORT_EVERY_SECS) -> None:
        self.source = source
        self.every_secs = every_secs
        self.listeners: list[Callable[[AudioDropped], None]] = []
        self.total_secs = 0.0
        self.reports = 0
        self._pending = 0.0
        self._reason: DropReason = "pipeline-behind"
        self._since: float | None = None
        self._lock = threading.Lock()

    def dropped(self, secs: float, reason: DropReason) -> None:
        now = time.monotonic()
        with self._lock:
            self.total_secs += secs
            self._pending += secs
            self._reason = reason
            if self._since is None:
                self._since = now
                due = True  # the first drop is reported at once: that is when someone should look
            else:
                due = now - self._since >= self.every_secs
        if due:
            self.flush()

    def flush(self) -> None:
        """Report what was dropped since the last report (if anything). Also called when the input stops."""
        now = time.monotonic()
        with self._lock:
            if self._pending <= 0:
                return
            event = AudioDropped(self.source, self._reason, self._pending, self.total_secs,
                                 now - (self._since if self._since is not None else now))
            self._pending = 0.0
            self._since = now
            self.reports += 1
        what = ("the audio device delivers faster than real time" if event.reason == "input-faster-than-real-time"
                else "the bot is not keeping up with its input")
        logger.warning(f"{event.source}: dropped the oldest {event.secs:.1f} s of input audio ({what}; "
                       f"{event.total_secs:.1f} s in all)")
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a failing listener must not take the audio thread down
                logger.exception("audio.dropped listener failed")


T = TypeVar("T")


class AudioRing(Generic[T]):
    """Thread-safe FIFO of audio blocks holding at most ``max_secs``; a full ring drops its oldest blocks.

    ``put`` never blocks (PortAudio's callback thread calls it) and calls ``wake`` only when the ring goes
    from empty to non-empty, so a device that delivers thousands of blocks a second cannot flood the event
    loop with callbacks either."""

    def __init__(self, max_secs: float, reporter: DropReporter, *, wake: Callable[[], None] | None = None,
                 reason: DropReason = "input-faster-than-real-time") -> None:
        self.max_secs = max_secs
        self.reporter = reporter
        self.wake = wake
        self.reason: DropReason = reason
        self._items: deque[tuple[T, float]] = deque()
        self._secs = 0.0
        self._lock = threading.Lock()

    def put(self, item: T, secs: float) -> None:
        dropped = 0.0
        with self._lock:
            was_empty = not self._items
            self._items.append((item, secs))
            self._secs += secs
            while self._secs > self.max_secs and len(self._items) > 1:
                _, old = self._items.popleft()
                self._secs -= old
                dropped += old
        if dropped:
            self.reporter.dropped(dropped, self.reason)
        if was_empty and self.wake is not None:
            self.wake()

    def pop(self) -> T | None:
        with self._lock:
            if not self._items:
                return None
            item, secs = self._items.popleft()
            self._secs -= secs
            return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._secs = 0.0

    @property
    def secs(self) -> float:
        return self._secs

    def __len__(self) -> int:
        return len(self._items)


class BoundedInput:
    """Mixin for pipecat input transports (before ``BaseInputTransport`` in the bases): counts the audio in
    pipecat's input queue, so a feeder can hold back while :attr:`backlog_secs` exceeds
    :data:`MAX_BACKLOG_SECS`. ``self.drops`` reports what the feeder drops."""

    drop_source = "input"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drops = DropReporter(self.drop_source)
        self._queued_secs = 0.0

    @property
    def backlog_secs(self) -> float:
        """Seconds of audio handed to pipecat's input queue and not yet passed downstream."""
        return max(0.0, self._queued_secs)

    @property
    def behind(self) -> bool:
        return self._queued_secs > MAX_BACKLOG_SECS

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        self._queued_secs += _secs(frame)
        await super().push_audio_frame(frame)  # type: ignore[misc]

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._queued_secs -= _secs(frame)
        await super().push_frame(frame, direction)  # type: ignore[misc]


def _secs(frame: InputAudioRawFrame) -> float:
    return len(frame.audio) / 2 / max(frame.num_channels, 1) / max(frame.sample_rate, 1)
