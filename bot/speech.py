"""Synthesize speech with the embedded Piper voice: for `voicebot demo`, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from bot.services import models


def synthesize(text: str, voice: str = "", *, length_scale: float | None = None,
               deterministic: bool = False) -> tuple[np.ndarray, int]:
    """Return (float32 mono samples, sample rate) of ``text`` spoken by a Piper voice (default: joe).

    Piper adds random variation to each utterance; ``deterministic`` turns it off so that the same
    text always gives the same samples (for measurements that must repeat)."""
    from piper import SynthesisConfig

    folder, voice_id = models.resolve_piper_voice(voice, "")
    v = models.load_piper_voice(str(folder / f"{voice_id}.onnx"))
    config = SynthesisConfig(length_scale=length_scale,
                             noise_scale=0.0 if deterministic else None,
                             noise_w_scale=0.0 if deterministic else None)
    chunks = [c.audio_float_array for c in v.synthesize(text, syn_config=config)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return audio.astype(np.float32), v.config.sample_rate


def synthesize_to_file(text: str, path: str | Path, *, lead_secs: float = 0.5, tail_secs: float = 0.3,
                       voice: str = "") -> Path:
    audio, rate = synthesize(text, voice)
    padded = np.concatenate([np.zeros(int(lead_secs * rate), np.float32), audio,
                             np.zeros(int(tail_secs * rate), np.float32)])
    sf.write(str(path), padded, rate, subtype="PCM_16")
    return Path(path)
