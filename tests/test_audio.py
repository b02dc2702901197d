"""bot.audio: the one set of sample conversions, channel mixing and resampling. Synthetic audio, no models."""

from __future__ import annotations

import numpy as np
import pytest

from bot.audio import (
    Resampler,
    as_int16,
    as_mono_float,
    float_to_int16,
    int16_to_float,
    pcm_to_float,
    pcm_to_int16,
    resample,
    to_mono,
    to_pcm,
    upmix,
)


def tone(freq: float, secs: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------- int16 <-> float


def test_every_int16_value_survives_a_round_trip_through_float():
    every = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    as_float = int16_to_float(every)
    assert as_float.dtype == np.float32
    assert as_float.min() == -1.0 and as_float.max() < 1.0
    assert np.array_equal(float_to_int16(as_float), every)


def test_float_to_int16_clips_rounds_and_silences_nan():
    x = np.array([0.0, 1.0, -1.0, 1.5, -7.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 1e-5, -1e-5, 0.49 / 32768])
    got = float_to_int16(x)
    assert got.dtype == np.int16
    assert got.tolist() == [0, 32767, -32768, 32767, -32768, 32767, -32768, 0, 16384, -16384, 0, -0, 0]
    # Rounded to nearest, not truncated towards zero: 0.9 LSB is 1, -0.9 LSB is -1.
    assert float_to_int16(np.array([0.9, -0.9]) / 32768).tolist() == [1, -1]


def test_as_int16_keeps_int16_and_refuses_other_integers():
    pcm = np.array([1, -2, 3], np.int16)
    assert as_int16(pcm) is pcm
    assert as_int16(np.array([0.25], np.float64)).tolist() == [8192]
    with pytest.raises(ValueError, match="int16 or float"):
        as_int16(np.array([1, 2], np.int32))


# --------------------------------------------------------------------------- channels


def test_to_mono_averages_interleaved_and_2d_the_same_way():
    left = np.full(960, 1000, np.int16)
    right = np.full(960, -3001, np.int16)
    frames = np.stack([left, right], axis=1)
    interleaved = frames.reshape(-1)
    assert to_mono(frames).tolist() == to_mono(interleaved, 2).tolist()
    # (1000 - 3001) / 2 = -1000.5: rounded half to even (-1000), the same rounding as float_to_int16.
    assert np.all(to_mono(interleaved, 2) == -1000)
    assert to_mono(interleaved, 2).dtype == np.int16
    # No wrap-around when both channels are near full scale.
    loud = np.array([32767, 32767, -32768, -32768], np.int16)
    assert to_mono(loud, 2).tolist() == [32767, -32768]


def test_to_mono_odd_channel_counts_and_incomplete_frames():
    three = np.array([3, 6, 9, 30, 60, 90, 7], np.int16)  # two whole 3-channel frames and a stray sample
    assert to_mono(three, 3).tolist() == [6, 60]
    five = np.arange(10, dtype=np.float32).reshape(2, 5)
    assert to_mono(five).tolist() == [2.0, 7.0]
    assert to_mono(five).dtype == np.float32
    assert to_mono(np.zeros(1, np.int16), 2).size == 0
    with pytest.raises(ValueError, match="channels"):
        to_mono(five, 3)
    with pytest.raises(ValueError, match="1-D"):
        to_mono(np.zeros((2, 2, 2), np.float32))


def test_pcm_helpers_drop_half_samples_and_round_trip():
    mono = np.array([0, 1, -1, 32767, -32768], np.int16)
    pcm = to_pcm(mono)
    assert pcm == mono.astype("<i2").tobytes()
    assert pcm_to_int16(pcm + b"\x01").tolist() == mono.tolist()  # an odd trailing byte is ignored
    stereo = to_pcm(upmix(mono, 2))
    assert len(stereo) == 2 * len(pcm)
    assert pcm_to_int16(stereo, 2).tolist() == mono.tolist()
    assert np.allclose(pcm_to_float(stereo, 2), int16_to_float(mono))
    assert to_pcm(np.array([0.5, np.nan])) == np.array([16384, 0], "<i2").tobytes()
    assert pcm_to_int16(memoryview(pcm)).tolist() == mono.tolist()


# --------------------------------------------------------------------------- resampling


def test_as_mono_float_mixes_resamples_and_clips():
    rate = 48000
    left = tone(440, 0.5, rate, amp=0.9)
    stereo = np.stack([left, left], axis=1)
    stereo[10, 0] = np.nan
    out = as_mono_float(stereo, rate, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 8000) <= 1
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert np.abs(out).max() > 0.8
    ints = as_mono_float(float_to_int16(left), rate, rate)
    assert np.allclose(ints, left, atol=1 / 32768 + 1e-6)


def test_streaming_resampler_matches_the_one_shot_resampler():
    rate_in, rate_out = 44100, 16000
    signal = float_to_int16(tone(300, 1.0, rate_in))
    whole = resample(int16_to_float(signal), rate_in, rate_out)
    rs = Resampler(rate_out)
    parts = [rs.process(signal[i:i + 882], rate_in) for i in range(0, len(signal), 882)]
    parts.append(rs.flush())
    streamed = int16_to_float(np.concatenate(parts))
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    # Both are soxr HQ: the same signal up to int16 quantisation.
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 2e-3


def test_resampler_passes_through_matching_rates_and_restarts_on_a_new_rate():
    rs = Resampler(16000)
    with pytest.raises(ValueError, match="input rate"):
        rs.process(np.zeros(10, np.int16))
    block = float_to_int16(tone(200, 0.02, 16000))
    assert rs.process(block, 16000).tolist() == block.tolist()
    assert rs.flush().size == 0
    # A new rate: 20 ms at 48 kHz gives about 20 ms at 16 kHz over a few blocks (soxr's delay aside).
    out = [rs.process(float_to_int16(tone(200, 0.02, 48000)), 48000) for _ in range(10)]
    got = sum(len(o) for o in out) + len(rs.flush())
    assert abs(got - 3200) <= 2
    # reset() drops what soxr held: the next block starts from a clean stream.
    rs.process(float_to_int16(tone(200, 0.02, 48000)))
    rs.reset()
    assert rs.in_rate == 48000
    assert resample(block, 16000, 16000) is block
