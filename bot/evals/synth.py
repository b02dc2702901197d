"""A scenario's turns as one recording on one timeline: synthesized voices, tempo and pitch, noise, a second
speaker. Everything is made here, offline: Piper (the embedded voice) and espeak-ng (its many voices and
accents) speak, sox changes tempo and pitch (prosody: a slow low voice, a fast high one), numpy mixes.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bot.audio import as_mono_float, resample
from bot.errors import VoicebotError
from bot.evals.suite import Noise, Scenario, Utterance, Voice

RATE = 16000
LEAD_SECS = 0.5


def _tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise VoicebotError(f"{name} is needed to build eval audio: install it (apt-get install {package}; "
                            "make setup does)")
    return exe


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    return resample(audio, rate, RATE).astype(np.float32, copy=False)


def speak(line: Voice) -> np.ndarray:
    """``line`` spoken at :data:`RATE` (float32 mono), tempo and pitch applied."""
    if line.voice.startswith("espeak:"):
        exe = _tool("espeak-ng", "espeak-ng")
        out = subprocess.run([exe, "-v", line.voice.split(":", 1)[1], "--stdout", line.say], capture_output=True)
        if out.returncode != 0 or not out.stdout:
            raise VoicebotError(f"espeak-ng could not speak with voice {line.voice!r}: "
                                f"{out.stderr.decode(errors='replace').strip()[:200] or 'no audio'} "
                                "(see espeak-ng --voices)")
        audio, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
    else:
        from bot.speech import synthesize  # noqa: PLC0415

        audio, rate = synthesize(line.say, line.voice.split(":", 1)[1] if ":" in line.voice else "",
                                 deterministic=True)
    audio = _resample(np.asarray(audio, dtype=np.float32), rate)
    if line.speed != 1.0 or line.pitch != 0.0:
        audio = _sox_effects(audio, line.speed, line.pitch)
    return audio


def _sox_effects(audio: np.ndarray, speed: float, semitones: float) -> np.ndarray:
    exe = _tool("sox", "sox")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(src, audio, RATE, subtype="FLOAT")
        effects = []
        if semitones:
            effects += ["pitch", f"{semitones * 100:.0f}"]
        if speed != 1.0:
            effects += ["tempo", "-s", f"{speed:g}"]
        run = subprocess.run([exe, str(src), str(dst), *effects], capture_output=True)
        if run.returncode != 0:
            raise VoicebotError(f"sox could not apply {' '.join(effects)}: {run.stderr.decode(errors='replace')[:200]}")
        out, _ = sf.read(dst, dtype="float32")
    return out


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS coloured noise: white (flat), pink (1/f), brown (1/f^2)."""
    white = rng.standard_normal(n)
    if kind == "white":
        out = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f) if kind == "pink" else f
        out = np.fft.irfft(spectrum, n)
    return (out / (np.sqrt(np.mean(out ** 2)) or 1.0)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    voiced = x[np.abs(x) > 1e-4]
    return float(np.sqrt(np.mean(voiced.astype(np.float64) ** 2))) if len(voiced) else 0.0


def _turn_audio(turn: Utterance, base: Path) -> tuple[np.ndarray, str | None]:
    if turn.audio is not None:
        path = turn.audio if turn.audio.is_absolute() else base / turn.audio
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError) as exc:
            raise VoicebotError(f"eval recording {path} could not be read ({exc})") from None
        return as_mono_float(data, rate, RATE), None
    return speak(Voice(say=turn.say or "", voice=turn.voice, speed=turn.speed, pitch=turn.pitch)), turn.say


def build_scenario_audio(scenario: Scenario, out: Path, *, suite_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """Write the scenario as one 16 kHz mono WAV at ``out``; return it and the reference transcript (what the
    user says, for word error rate). Turns start at ``at`` or after the previous one plus ``scenario.gap``."""
    rng = np.random.default_rng(seed)
    placed: list[tuple[int, np.ndarray]] = []
    said: list[str] = []
    cursor = LEAD_SECS
    for turn in scenario.turns:
        audio, text = _turn_audio(turn, suite_dir)
        start = turn.at if turn.at is not None else cursor
        if turn.background is not None:
            bg = speak(turn.background) * (10 ** (turn.background.gain_db / 20.0))
            bg_start = max(0.0, start + turn.background.offset)
            placed.append((int(bg_start * RATE), bg.astype(np.float32)))
        if turn.noise is not None:
            audio = _with_noise(audio, turn.noise, rng)
        placed.append((int(start * RATE), audio))
        if text:
            said.append(text)
        cursor = start + len(audio) / RATE + scenario.gap
    total = max(i + len(a) for i, a in placed) + int(scenario.gap * RATE)
    track = np.zeros(total, dtype=np.float32)
    for i, a in placed:
        track[i:i + len(a)] += a
    peak = float(np.max(np.abs(track))) if len(track) else 0.0
    if peak > 0.99:
        track *= 0.99 / peak
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, track, RATE, subtype="PCM_16")
    return out, " ".join(said)


def _with_noise(audio: np.ndarray, spec: Noise, rng: np.random.Generator) -> np.ndarray:
    pad = int(0.3 * RATE)  # noise also before and after the words, as in a real room
    speech = np.concatenate([np.zeros(pad, np.float32), audio, np.zeros(pad, np.float32)])
    level = _rms(audio) / (10 ** (spec.snr_db / 20.0))
    return speech + noise(spec.kind, len(speech), rng) * level
