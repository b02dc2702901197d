"""Sample conversions, channel mixing and resampling: the one place the rest of voicebot does them.

Conventions (every transport, service, recorder and the audit log follow them):

* **PCM** is signed 16-bit little-endian (``<i2``), interleaved when it has more than one channel.
* **float** audio is float32 in [-1, 1]. ``int16 -> float`` divides by 32768; ``float -> int16`` multiplies by
  32768, rounds to the nearest integer (halves to even) and clips to [-32768, 32767], so
  ``float_to_int16(int16_to_float(x)) == x`` for every int16 ``x``. NaN becomes 0 (silence), +/-inf and
  anything beyond full scale clip.
* **Mono** is the mean of the channels, rounded the same way for int16 (not truncated towards zero).
  Interleaved data whose length is not a whole number of frames loses the incomplete last frame.
* **Resampling** is soxr's "HQ" quality everywhere: :func:`resample` for a whole signal, :class:`Resampler`
  for a stream (it keeps soxr's filter state across chunks, passes audio through when the rates match and
  starts a new soxr stream when the input rate changes).
"""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "HQ"
"""soxr quality used for every resampling (python-soxr's default)."""
_SCALE = 32768.0


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1)."""
    return np.asarray(samples, dtype=np.int16).astype(np.float32) / np.float32(_SCALE)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples (nominally [-1, 1]) -> int16: NaN -> 0, clipped at full scale, rounded to nearest."""
    arr = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(arr * _SCALE), -32768, 32767).astype(np.int16)


def as_int16(samples: np.ndarray) -> np.ndarray:
    """int16 samples unchanged, float samples converted with :func:`float_to_int16`; other types: ValueError."""
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return float_to_int16(arr)
    raise ValueError(f"audio samples must be int16 or float, got {arr.dtype}")


def to_mono(samples: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Average the channels, keeping the dtype (int16 stays int16, rounded; float stays float32).

    ``samples`` is either 2-D ``(frames, channels)`` (``channels`` then defaults to its second axis) or 1-D
    interleaved with ``channels`` channels (default 1: already mono). A trailing incomplete frame is dropped.
    """
    arr = np.asarray(samples)
    if arr.ndim == 2:
        if channels is not None and channels != arr.shape[1]:
            raise ValueError(f"audio has {arr.shape[1]} channels, not {channels}")
        channels = arr.shape[1]
        arr = arr.reshape(-1)
    elif arr.ndim != 1:
        raise ValueError(f"audio must be 1-D (interleaved) or 2-D (frames, channels), got shape {arr.shape}")
    channels = channels or 1
    if channels < 1:
        raise ValueError(f"channel count must be at least 1, got {channels}")
    frames = arr[: len(arr) - len(arr) % channels].reshape(-1, channels)
    if arr.dtype == np.int16:
        if channels == 1:
            return frames[:, 0].copy()
        return np.rint(frames.mean(axis=1)).astype(np.int16)
    if channels == 1:
        return frames[:, 0].astype(np.float32)
    return frames.mean(axis=1, dtype=np.float64).astype(np.float32)


def upmix(mono: np.ndarray, channels: int) -> np.ndarray:
    """Mono samples -> interleaved ``channels`` copies of each sample (same dtype)."""
    mono = np.asarray(mono)
    return mono if channels == 1 else np.repeat(mono, channels)


def pcm_to_int16(pcm: bytes | bytearray | memoryview, channels: int = 1) -> np.ndarray:
    """PCM bytes (``channels`` interleaved) -> mono int16 samples. An odd trailing byte is ignored."""
    view = memoryview(pcm).cast("B")
    samples = np.frombuffer(view[: len(view) - len(view) % 2], dtype="<i2")
    return to_mono(samples, channels).astype(np.int16, copy=False)


def pcm_to_float(pcm: bytes | bytearray | memoryview, channels: int = 1) -> np.ndarray:
    """PCM bytes (``channels`` interleaved) -> mono float32 in [-1, 1)."""
    return int16_to_float(pcm_to_int16(pcm, channels))


def to_pcm(samples: np.ndarray) -> bytes:
    """int16 or float samples -> PCM bytes (little-endian int16)."""
    return as_int16(samples).astype("<i2", copy=False).tobytes()


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """A whole signal (1-D, or 2-D ``(frames, channels)``) from ``in_rate`` to ``out_rate`` (no-op if equal)."""
    if in_rate == out_rate:
        return samples
    return soxr.resample(samples, in_rate, out_rate, quality=QUALITY)


def as_mono_float(samples: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """Any decoded audio (int16 or float, 1-D mono or 2-D ``(frames, channels)``) -> mono float32 in [-1, 1]
    at ``out_rate``: what a file or a stored recording becomes before it is fed to the pipeline."""
    mono = to_mono(samples)
    if mono.dtype == np.int16:
        mono = int16_to_float(mono)
    mono = np.nan_to_num(mono.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(resample(mono, rate, out_rate), -1.0, 1.0).astype(np.float32, copy=False)


class Resampler:
    """Streaming mono resampler to a fixed output rate, over :class:`soxr.ResampleStream`.

    :meth:`process` takes each chunk with its input rate: audio at ``out_rate`` passes through untouched; a
    new input rate starts a new soxr stream (the old one's few buffered samples are dropped, as a device
    change would). :meth:`flush` returns what soxr still holds at the end of an utterance; :meth:`reset`
    drops it (an interruption).
    """

    def __init__(self, out_rate: int, in_rate: int | None = None, *, dtype: str = "int16") -> None:
        self.out_rate = out_rate
        self.dtype = np.dtype(dtype)
        self.in_rate = in_rate
        self._stream: soxr.ResampleStream | None = None
        if in_rate is not None:
            self._stream = self._new(in_rate)

    def _new(self, in_rate: int) -> soxr.ResampleStream | None:
        if in_rate == self.out_rate:
            return None
        return soxr.ResampleStream(in_rate, self.out_rate, 1, dtype=self.dtype.name, quality=QUALITY)

    def process(self, samples: np.ndarray, in_rate: int | None = None) -> np.ndarray:
        """One chunk of mono samples (the resampler's dtype) at ``in_rate`` (default: the last one given)."""
        if in_rate is not None and in_rate != self.in_rate:
            self.in_rate = in_rate
            self._stream = self._new(in_rate)
        if self.in_rate is None:
            raise ValueError("Resampler.process needs the input rate the first time")
        samples = np.asarray(samples, dtype=self.dtype)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """The end of a stream: the samples soxr still holds; the next chunk starts a fresh stream."""
        if self._stream is None:
            return np.zeros(0, dtype=self.dtype)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=self.dtype), last=True)
        self.reset()
        return tail

    def reset(self) -> None:
        """Drop what soxr holds (an interruption): the next chunk starts a fresh stream."""
        if self.in_rate is not None:
            self._stream = self._new(self.in_rate)
