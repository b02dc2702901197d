"""Audio files in: any rate, channels and container; bad files fail in one clear line."""

import numpy as np
import pytest
import soundfile as sf

from bot.errors import VoicebotError
from bot.transports.file import load_audio


def test_any_rate_and_channels_become_16k_mono(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    for ext, subtype in (("wav", "PCM_24"), ("flac", "PCM_16"), ("ogg", "VORBIS")):
        path = tmp_path / f"tone.{ext}"
        sf.write(str(path), stereo, rate, subtype=subtype)
        out = load_audio(path, 16000)
        assert out.dtype == np.float32 and abs(len(out) - 16000) <= 2
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(int(np.argmax(spectrum)) - 440) <= 2  # still a 440 Hz tone after resampling


@pytest.mark.parametrize("content,match", [
    (b"", "cannot read"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "cannot read"),
    (b"this is not audio at all" * 10, "cannot read"),
])
def test_corrupt_files_fail_clearly(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(VoicebotError, match=match) as err:
        load_audio(path, 16000)
    assert "\n" not in str(err.value)


def test_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(VoicebotError, match="empty"):
        load_audio(empty, 16000)
    with pytest.raises(VoicebotError, match="not found"):
        load_audio(tmp_path / "absent.wav", 16000)
