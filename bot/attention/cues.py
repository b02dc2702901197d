"""Sound cues the bot speaks up about unprompted: detectors that run on the raw input audio beside the VAD.

Shipped: the standardised alarm patterns, which can be recognised from timing alone, reliably and offline:

* ``smoke-alarm`` — the **temporal-three** pattern (ISO 8201, NFPA 72): three 0.5 s tones 0.5 s apart, then
  1.5 s of silence, repeated. Detected after one group of three plus the start of the long pause (about 3 s
  after the alarm starts).
* ``co-alarm`` — the **temporal-four** pattern of carbon-monoxide alarms (NFPA 720 / UL 2034): four 0.1 s
  tones 0.1 s apart, then 5 s of silence, repeated. Detected after one group of four plus a pause.

A "tone" is a 20 ms frame whose energy between 400 Hz and 4.5 kHz sits in a narrow peak (a beeping piezo
horn, typically ~3 kHz, or a low-frequency 520 Hz sounder) and is well above the recent background. Pulses
must keep the same pitch (within 8 %) and the timing within the standard's tolerances, and a group must be
set off by a pause before it as well as after it (a steady train of appliance beeps is not); speech, music and
household noise rarely do all of that at once (measured by ``benchmarks/attention.py``). Detectors that could
not be made reliable offline here (doorbell chimes, phones, glass, a baby) are not shipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

CueName = Literal["smoke-alarm", "co-alarm"]
CUES: tuple[CueName, ...] = ("smoke-alarm", "co-alarm")

RATE = 16000
FRAME = 320  # 20 ms
BAND = (400.0, 4500.0)


@dataclass(frozen=True)
class Pattern:
    name: CueName
    pulses: int
    on: tuple[float, float]
    """Allowed tone length (s)."""
    gap: tuple[float, float]
    """Allowed silence between the pulses of a group (s)."""
    pause: float
    """Silence after the last pulse that confirms the group ended (s); the standard's pause is longer."""


PATTERNS: dict[CueName, Pattern] = {
    "smoke-alarm": Pattern("smoke-alarm", 3, on=(0.4, 0.62), gap=(0.4, 0.58), pause=0.6),
    "co-alarm": Pattern("co-alarm", 4, on=(0.06, 0.16), gap=(0.06, 0.16), pause=0.5),
}


@dataclass
class Pulse:
    start: float
    end: float
    freq: float


@dataclass
class CueEvent:
    """A cue was recognised: ``onset`` is when its first pulse started, ``t`` when it was recognised."""

    cue: CueName
    onset: float
    t: float
    freq: float


@dataclass
class _Tone:
    start: float
    freqs: list[float] = field(default_factory=list)


class ToneTracker:
    """20 ms frames -> tonal pulses (start, end, pitch)."""

    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self._window = np.hanning(FRAME).astype(np.float32)
        freqs = np.fft.rfftfreq(FRAME, 1.0 / rate)
        self._band = (freqs >= BAND[0]) & (freqs <= BAND[1])
        self._freqs = freqs
        self._floor: deque[float] = deque(maxlen=100)  # 2 s of frame energies: the background level
        self._tone: _Tone | None = None
        self._quiet_frames = 0

    def frame(self, samples: np.ndarray, t: float) -> Pulse | None:
        """Feed one frame (float32, FRAME samples) starting at ``t``; returns a pulse when one just ended."""
        spec = np.abs(np.fft.rfft(samples * self._window)) ** 2
        band = spec[self._band]
        energy = float(band.sum())
        floor = float(np.median(self._floor)) if len(self._floor) >= 10 else 0.0
        tonal = False
        freq = 0.0
        if energy > 1e-4 and energy > 8.0 * max(floor, 1e-9):
            k = int(np.argmax(band))
            peak = float(band[max(0, k - 2):k + 3].sum())
            tonal = peak / energy > 0.6
            freq = float(self._freqs[self._band][k])
        self._floor.append(floor if tonal else energy)
        if tonal and self._tone is not None and self._tone.freqs:
            ref = float(np.median(self._tone.freqs))
            if abs(freq - ref) > 0.08 * ref:  # a different pitch: this tone ended, another begins
                ended = self._end(t)
                self._tone = _Tone(start=t, freqs=[freq])
                return ended
        if tonal:
            if self._tone is None:
                self._tone = _Tone(start=t)
            self._tone.freqs.append(freq)
            self._quiet_frames = 0
            return None
        if self._tone is not None:
            self._quiet_frames += 1
            if self._quiet_frames >= 2:  # 40 ms without the tone: it ended
                return self._end(t - (self._quiet_frames - 1) * FRAME / self.rate)
        return None

    def _end(self, t_end: float) -> Pulse | None:
        tone, self._tone, self._quiet_frames = self._tone, None, 0
        if tone is None or not tone.freqs:
            return None
        return Pulse(start=tone.start, end=t_end, freq=float(np.median(tone.freqs)))


class PatternMatcher:
    """Pulses -> a recognised pattern (one group of ``pulses`` tones with the right timing, then a pause)."""

    def __init__(self, pattern: Pattern) -> None:
        self.p = pattern
        self._group: list[Pulse] = []
        self._last_end: float | None = None
        """End of the last tone of any kind: a group must start after a pause as long as the one that ends
        it (an alarm group is set off by silence on both sides; a steady train of beeps is not)."""

    def pulse(self, pulse: Pulse) -> None:
        on = pulse.end - pulse.start
        ok_on = self.p.on[0] <= on <= self.p.on[1]
        if self._group:
            last = self._group[-1]
            gap = pulse.start - last.end
            same = abs(pulse.freq - last.freq) <= 0.08 * last.freq
            if not (ok_on and same and self.p.gap[0] <= gap <= self.p.gap[1]) or len(self._group) >= self.p.pulses:
                self._group = []
        before, self._last_end = self._last_end, pulse.end
        if ok_on and (self._group or before is None or pulse.start - before >= self.p.pause):
            self._group.append(pulse)

    def check(self, now: float) -> CueEvent | None:
        """Called as time passes: the group is confirmed once its pause has lasted long enough."""
        if len(self._group) == self.p.pulses and now - self._group[-1].end >= self.p.pause:
            group, self._group = self._group, []
            return CueEvent(cue=self.p.name, onset=group[0].start, t=now, freq=group[0].freq)
        # A pulse is reported when it ends: an incomplete group whose next pulse would have ended by now is over.
        if self._group and len(self._group) < self.p.pulses and \
                now - self._group[-1].end > self.p.gap[1] + self.p.on[1] + 0.1:
            self._group = []
        return None


class CueDetector:
    """Audio in (any block size, float32 mono at 16 kHz) -> :class:`CueEvent` s for the enabled cues."""

    def __init__(self, cues: list[CueName] | tuple[CueName, ...], rate: int = RATE) -> None:
        if rate != RATE:
            raise ValueError(f"cue detection runs at {RATE} Hz, got {rate}")
        self.tracker = ToneTracker(rate)
        self.matchers = [PatternMatcher(PATTERNS[c]) for c in cues]
        self._buf = np.zeros(0, dtype=np.float32)
        self._t = 0.0

    def feed(self, samples: np.ndarray) -> list[CueEvent]:
        self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
        events: list[CueEvent] = []
        while len(self._buf) >= FRAME:
            frame, self._buf = self._buf[:FRAME], self._buf[FRAME:]
            pulse = self.tracker.frame(frame, self._t)
            self._t += FRAME / RATE
            for m in self.matchers:
                if pulse is not None:
                    m.pulse(pulse)
                event = m.check(self._t)
                if event is not None:
                    events.append(event)
        return events


def alarm_pattern(cue: CueName, secs: float, *, freq: float = 3100.0, level: float = 0.3,
                  rate: int = RATE) -> np.ndarray:
    """A synthetic alarm of ``secs`` seconds in the standard's timing (for tests and the benchmark)."""
    if cue == "smoke-alarm":
        cycle = [(0.5, True), (0.5, False), (0.5, True), (0.5, False), (0.5, True), (1.5, False)]
    else:
        cycle = [(0.1, True), (0.1, False)] * 3 + [(0.1, True), (5.0, False)]
    out: list[np.ndarray] = []
    total = 0.0
    while total < secs:
        for dur, on in cycle:
            n = int(dur * rate)
            t = np.arange(n) / rate
            out.append((level * np.sin(2 * np.pi * freq * t) if on else np.zeros(n)).astype(np.float32))
            total += dur
    return np.concatenate(out)[: int(secs * rate)]
