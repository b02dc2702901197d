"""Shared fixtures: real speech synthesized with the embedded Piper voice (or espeak-ng), real models.

Nothing here reads ../shared or downloads anything: every test makes the audio it needs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def word_recall(expected: str, heard: str) -> float:
    """Fraction of the expected words that appear in what was heard (order-free, for ASR slack)."""
    exp, got = words(expected), set(words(heard))
    return sum(w in got for w in exp) / max(len(exp), 1)


@pytest.fixture(scope="session")
def piper():
    from bot.speech import synthesize

    return synthesize


@pytest.fixture(scope="session")
def transcriber():
    """Whisper tiny.en from the embedded model package: turns audio back into words."""
    from faster_whisper import WhisperModel

    from bot.services.models import whisper_tiny_en

    model = WhisperModel(str(whisper_tiny_en().path), device="cpu", compute_type="int8")

    def transcribe(path_or_samples, start: float = 0.0, end: float | None = None) -> str:
        if isinstance(path_or_samples, (str, Path)):
            from bot.audio import as_mono_float

            audio, rate = sf.read(str(path_or_samples), dtype="float32", always_2d=True)
            audio = as_mono_float(audio, rate, 16000)
        else:
            audio = path_or_samples
        audio = audio[int(start * 16000): None if end is None else int(end * 16000)]
        segments, _ = model.transcribe(audio.astype(np.float32), beam_size=5, language="en")
        return " ".join(s.text.strip() for s in segments)

    return transcribe


@pytest.fixture
def make_speech(tmp_path, piper):
    """Write speech to a file: [(start_secs, text), ...] placed on one timeline, at any rate/channels."""

    def make(parts, name="question.wav", rate=None, channels=1, total_secs=None, subtype="PCM_16",
             engine="piper"):
        clips = []
        for start, text in parts:
            if engine == "espeak":
                audio, r = espeak(text)
            else:
                audio, r = piper(text)
            clips.append((start, audio, r))
        native = clips[0][2]
        out_rate = rate or native
        end = max(s + len(a) / r for s, a, r in clips) + 0.5
        track = np.zeros(int((total_secs or end) * out_rate), dtype=np.float32)
        for start, audio, r in clips:
            from bot.audio import resample

            audio = resample(audio, r, out_rate)
            i = int(start * out_rate)
            track[i:i + len(audio)] += audio[: len(track) - i]
        if channels > 1:
            track = np.stack([track] * channels, axis=1)
        path = tmp_path / name
        sf.write(str(path), track, out_rate, subtype=subtype)
        return path

    return make


def espeak(text: str) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (make setup installs it)")
    wav = subprocess.run([exe, "--stdout", text], check=True, capture_output=True).stdout
    import io

    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return audio, rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


@pytest.fixture
def settings_factory(tmp_path):
    from bot.config import load_settings

    def make(**overrides):
        base = {"audit.dir": str(tmp_path / "audits")}
        base.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_settings(None, base)

    return make
