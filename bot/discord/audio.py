"""Audio adapters between Discord voice and the pipeline. Pure numpy and :mod:`bot.audio`: no py-cord, no asyncio.

Discord voice is Opus at 48 kHz stereo in 20 ms packets; py-cord decodes a packet to 3840 bytes of s16le
PCM (960 samples x 2 channels x 2 bytes). The pipeline hears 16 kHz mono and speaks 24 kHz mono.

Receive side (:class:`UserStream`, one per speaker): frames in, 16 kHz mono out, **on real time**. A Discord
client sends nothing while its user is silent (after five Opus silence frames), so when a packet arrives
after a gap, the gap is filled with silence — measured with the packet's RTP timestamp (48 kHz ticks, exact),
or the arrival time when the timestamp is missing or implausible. Whatever silence the reader already took
out of an empty buffer while waiting ("credit") is not inserted twice, so a stream read at real-time pace
stays on real time and a stream nobody reads keeps its pauses.

Send side (:class:`FrameSlicer`, :class:`PlaybackQueue`): bot audio (24 kHz mono by default) becomes
48 kHz stereo s16le cut into exactly 3840-byte frames; the last frame of an utterance is zero-padded. The
queue is read by py-cord's player thread every 20 ms and can be flushed at once on barge-in.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from bot.audio import Resampler, int16_to_float, pcm_to_int16, to_pcm, upmix

DISCORD_RATE = 48000
DISCORD_CHANNELS = 2
FRAME_SECS = 0.02
FRAME_SAMPLES = 960
"""Samples per channel in one 20 ms frame."""
FRAME_BYTES = FRAME_SAMPLES * DISCORD_CHANNELS * 2
"""3840: one 20 ms frame of 48 kHz stereo s16le, what py-cord's decoder gives and its player wants."""
SILENT_FRAME = bytes(FRAME_BYTES)
RTP_WRAP = 1 << 32
SPURT_GAP_SECS = 1.0
"""Silence longer than this between voiced frames starts a new run of speech (a new ``spurt_start``)."""
VOICE_RMS = 1e-3
"""A frame louder than this (about -60 dBFS) counts as the user talking. Discord's own silence frames and
the tail of packet-loss concealment decode to (near) zeros."""


def to_discord_frames(samples: np.ndarray, rate: int) -> list[bytes]:
    """Mono audio (float in [-1, 1] or int16) at ``rate`` -> 3840-byte 48 kHz stereo frames, last zero-padded.

    A one-shot helper (tests, notices); streaming audio goes through :class:`FrameSlicer`."""
    slicer = FrameSlicer(rate)
    return slicer.feed(to_pcm(samples), rate) + slicer.flush()


def rms(samples: np.ndarray) -> float:
    if not len(samples):
        return 0.0
    return float(np.sqrt(np.mean(np.square(int16_to_float(samples), dtype=np.float64))))


class UserStream:
    """One speaker's audio: 48 kHz stereo frames in (any thread hands them to one owner), 16 kHz mono out.

    Not thread-safe: the owner (the input transport, on the event loop) calls :meth:`push` and :meth:`read`.
    """

    def __init__(self, out_rate: int = 16000, *, max_secs: float = 30.0, max_gap_secs: float = 2.0) -> None:
        self.out_rate = out_rate
        self._resampler = Resampler(out_rate, DISCORD_RATE)
        self._chunks: deque[np.ndarray] = deque()
        self._buffered = 0
        self._max_samples = int(max_secs * out_rate)
        self._max_gap = int(max_gap_secs * DISCORD_RATE)
        self._next_ts: int | None = None
        self._next_arrival: float | None = None
        self._credit_secs = 0.0
        self.last_voice = float("-inf")
        """Arrival time (monotonic seconds) of the last frame with voice in it."""
        self.spurt_start: float | None = None
        """Arrival time of the first voiced frame of the current run of speech."""
        self.pending_voice = False
        """Voiced audio is buffered that nobody has read yet."""
        self.frames_in = 0
        self.gap_secs_filled = 0.0

    # -- in ---------------------------------------------------------------------------------------

    def push(self, pcm: bytes, *, timestamp: int | None, arrival: float) -> None:
        """One decoded frame (normally 3840 bytes) with its RTP timestamp and monotonic arrival time."""
        mono48 = pcm_to_int16(pcm, DISCORD_CHANNELS)
        if not len(mono48):
            return
        gap = self._gap(len(mono48), timestamp, arrival)
        self.frames_in += 1
        # Silence that the reader already took out of the empty buffer covers (part of) this gap.
        fill = max(0, gap - int(round(self._credit_secs * DISCORD_RATE)))
        self._credit_secs = 0.0
        if fill:
            self.gap_secs_filled += fill / DISCORD_RATE
            self._append(self._resampler.process(np.zeros(fill, dtype=np.int16)))
        self._append(self._resampler.process(mono48))
        self._next_ts = None if timestamp is None else (timestamp + len(mono48)) % RTP_WRAP
        self._next_arrival = arrival + len(mono48) / DISCORD_RATE
        if rms(mono48) > VOICE_RMS:
            if self.spurt_start is None or arrival - self.last_voice > SPURT_GAP_SECS:
                self.spurt_start = arrival
            self.last_voice = arrival
            self.pending_voice = True

    def _gap(self, n: int, timestamp: int | None, arrival: float) -> int:
        """Samples (48 kHz) of silence between the previous frame and this one."""
        if self._next_arrival is None:
            return 0  # first frame: the stream starts here
        wall = max(0.0, arrival - self._next_arrival)  # late by this much (plus network jitter)
        if timestamp is not None and self._next_ts is not None:
            delta = (timestamp - self._next_ts) % RTP_WRAP
            if delta >= RTP_WRAP // 2:
                return 0  # older than expected (reordered or duplicate): no gap
            # Trust the timestamp unless it disagrees with the wall clock by more than a second
            # (a client that restarted its RTP clock).
            if delta / DISCORD_RATE <= wall + 1.0:
                return min(delta, self._max_gap)
        frames = int(round(wall / FRAME_SECS)) if wall > 1.5 * FRAME_SECS else 0
        return min(frames * n, self._max_gap)

    def _append(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._chunks.append(samples)
        self._buffered += len(samples)
        while self._buffered > self._max_samples and self._chunks:
            self._buffered -= len(self._chunks.popleft())

    # -- out --------------------------------------------------------------------------------------

    @property
    def buffered_secs(self) -> float:
        return self._buffered / self.out_rate

    def read(self, n: int) -> np.ndarray:
        """``n`` samples, padded with silence if fewer are buffered (that silence counts as credit)."""
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            take = min(n - filled, len(chunk))
            out[filled:filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        self._buffered -= filled
        self._credit_secs += (n - filled) / self.out_rate
        if not self._buffered:
            self.pending_voice = False
        return out

    def keep_last(self, secs: float) -> None:
        """Drop all but the last ``secs`` of buffered audio (someone waiting for the floor)."""
        keep = int(secs * self.out_rate)
        while self._buffered > keep and self._chunks:
            extra = self._buffered - keep
            head = self._chunks[0]
            if len(head) <= extra:
                self._chunks.popleft()
                self._buffered -= len(head)
            else:
                self._chunks[0] = head[extra:]
                self._buffered -= extra
        self._credit_secs = 0.0

    def wait_for_floor(self, now: float, max_secs: float, preroll_secs: float = 0.3) -> None:
        """Trim the buffer of someone who does not hold the floor: keep their current (or last) run of speech
        and a short pre-roll, at most ``max_secs`` of it; once their last speech is older than ``max_secs``,
        drop it unheard."""
        if self.spurt_start is None or now - self.last_voice > max_secs:
            if self._buffered:
                self.clear()
            self.pending_voice = False
            return
        self.keep_last(min(max_secs, now - self.spurt_start + preroll_secs))

    def clear(self) -> None:
        self._chunks.clear()
        self._buffered = 0
        self._credit_secs = 0.0
        self.pending_voice = False

    def talking(self, now: float, window: float = 0.3) -> bool:
        return now - self.last_voice <= window


class FrameSlicer:
    """Bot audio (mono or interleaved, any rate) -> 48 kHz stereo s16le frames of exactly 3840 bytes.

    Streaming: :meth:`feed` returns the complete frames so far and keeps the remainder; :meth:`flush` (end
    of an utterance) returns what the resampler holds plus the remainder, zero-padded to a whole frame;
    :meth:`reset` (barge-in) drops both.
    """

    def __init__(self, in_rate: int) -> None:
        self._resampler = Resampler(DISCORD_RATE, in_rate)
        self._rest = np.zeros(0, dtype=np.int16)

    def feed(self, pcm: bytes, rate: int | None = None, channels: int = 1) -> list[bytes]:
        mono = self._resampler.process(pcm_to_int16(pcm, channels), rate)
        return self._cut(mono, last=False)

    def flush(self) -> list[bytes]:
        return self._cut(self._resampler.flush(), last=True)

    def reset(self) -> None:
        self._resampler.reset()
        self._rest = np.zeros(0, dtype=np.int16)

    def _cut(self, mono48: np.ndarray, *, last: bool) -> list[bytes]:
        samples = np.concatenate([self._rest, mono48]) if len(self._rest) else mono48
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        if last and len(samples) > whole:
            samples = np.concatenate([samples, np.zeros(whole + FRAME_SAMPLES - len(samples), dtype=np.int16)])
            whole = len(samples)
        self._rest = samples[whole:].copy()
        blob = to_pcm(upmix(samples[:whole], DISCORD_CHANNELS))
        return [blob[i:i + FRAME_BYTES] for i in range(0, len(blob), FRAME_BYTES)]


class PlaybackQueue:
    """The frames waiting to be played, shared by the event loop (writer) and py-cord's player thread.

    :meth:`read` is py-cord's ``AudioSource.read``: one 3840-byte frame per call, every 20 ms. When the
    queue runs dry it returns silence for ``hangover_frames`` (so short gaps between sentences do not stop
    the player) and then ``b""``, which ends playback (py-cord then clears the speaking indicator); the
    transport starts it again with the next audio.
    """

    def __init__(self, *, hangover_frames: int = 15, max_frames: int = 150) -> None:
        self._frames: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._hangover = hangover_frames
        self._idle = 0
        self._max = max_frames
        self.frames_read = 0
        self.frames_dropped = 0

    def put(self, frames: list[bytes]) -> None:
        if not frames:
            return
        with self._lock:
            for frame in frames:
                if len(frame) != FRAME_BYTES:
                    raise ValueError(f"Discord frames are {FRAME_BYTES} bytes, got {len(frame)}")
                self._frames.append(frame)
            self._idle = 0
            while len(self._frames) > self._max:  # nobody is reading (not connected): keep latency bounded
                self._frames.popleft()
                self.frames_dropped += 1

    def flush(self) -> int:
        """Drop everything queued (barge-in). Returns how many frames were dropped."""
        with self._lock:
            dropped = len(self._frames)
            self._frames.clear()
            self._idle = self._hangover  # nothing more to say: let the player stop
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def queued_secs(self) -> float:
        return len(self) * FRAME_SECS

    def read(self) -> bytes:
        with self._lock:
            if self._frames:
                self.frames_read += 1
                return self._frames.popleft()
            if self._idle < self._hangover:
                self._idle += 1
                return SILENT_FRAME
            return b""
