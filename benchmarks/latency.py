"""Voice-to-voice latency of the cascade on this machine, stage by stage.

Runs N spoken questions (synthesized with Piper and espeak-ng in varied voices, speeds and lengths,
plus any WAV/FLAC files from --wav-dir) through the file transport on the configured models (by
default the embedded ones) and prints a table of per-stage p50/p95 and voice-to-voice p50/p95.

Voice-to-voice is measured on the audio itself: from the last voiced sample of the question (energy
above -45 dBFS in 10 ms frames) to the first non-silent sample of reply.wav, which lies on the same
timeline. Stage times come from the turn tracker (session timeline). "LLM answer out" is when the LLM's
response starts to flow downstream: the request itself, or, when the answer was prepared during the
end-of-turn wait (vad.speculate), the turn end that releases it.

    .venv/bin/python benchmarks/latency.py                 # 20 synthesized questions, embedded models
    .venv/bin/python benchmarks/latency.py -n 40 --wav-dir my_questions/ --set llm.provider=openai ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.audio import to_mono  # noqa: E402
from bot.config import load_settings, parse_overrides  # noqa: E402
from bot.persona import load_persona  # noqa: E402
from bot.session import run_file  # noqa: E402
from bot.speech import synthesize  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book for a long train ride?",
    "What's the weather usually like in Spain in April?",
    "Tell me a fun fact about octopuses.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "What time zone is Tokyo in?",
    "Give me an idea for dinner tonight, something quick and healthy.",
    "Who wrote Romeo and Juliet?",
    "How many legs does a spider have?",
    "What should I name my new puppy?",
    "Is it better to run in the morning or in the evening?",
    "What does a bee do all day?",
    "Explain what a rainbow is in one sentence.",
    "Hi there.",
    "Can you help me plan a birthday party for my sister who loves gardening and old movies?",
    "What is two plus two?",
    "Where do penguins live?",
    "How do airplanes stay in the air?",
]
ESPEAK_VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f4"]
SILENCE_DBFS = -45.0


def voiced_end(samples: np.ndarray, rate: int) -> float:
    frame = rate // 100
    n = len(samples) // frame
    energy = 20 * np.log10(np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12)
    voiced = np.flatnonzero(energy > SILENCE_DBFS)
    return (voiced[-1] + 1) * frame / rate if len(voiced) else 0.0


def first_sound(samples: np.ndarray, rate: int, after: float) -> float | None:
    start = int(after * rate)
    idx = np.flatnonzero(np.abs(samples[start:]) > 10 ** (SILENCE_DBFS / 20))
    return (start + idx[0]) / rate if len(idx) else None


def make_questions(n: int, out: Path, wav_dir: Path | None) -> list[tuple[str, Path]]:
    items: list[tuple[str, Path]] = []
    espeak = shutil.which("espeak-ng")
    for i in range(n):
        text = QUESTIONS[i % len(QUESTIONS)]
        path = out / f"q{i:02d}.wav"
        if i % 2 == 0 or espeak is None:
            scale = (0.85, 1.0, 1.15)[i % 3]
            audio, rate = synthesize(text, length_scale=scale)
            label = f"piper x{scale}"
        else:
            voice = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
            speed = 150 + 10 * (i % 5)
            wav = subprocess.run([espeak, "-v", voice, "-s", str(speed), "--stdout", text],
                                 check=True, capture_output=True).stdout
            tmp = out / "espeak.wav"
            tmp.write_bytes(wav)
            audio, rate = sf.read(str(tmp), dtype="float32")
            label = f"espeak {voice} {speed}wpm"
        lead = np.zeros(int(0.4 * rate), np.float32)
        sf.write(str(path), np.concatenate([lead, audio, np.zeros(int(0.5 * rate), np.float32)]), rate)
        items.append((f"{label}: {text}", path))
    if wav_dir:
        for path in sorted(wav_dir.glob("*")):
            if path.suffix.lower() in (".wav", ".flac", ".ogg"):
                items.append((f"file: {path.name}", path))
    return items


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="synthesized questions (default 20)")
    ap.add_argument("--wav-dir", type=Path, help="also run every WAV/FLAC/OGG in this folder")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (as the CLI)")
    ap.add_argument("--json", type=Path, help="also write per-question results to this file")
    args = ap.parse_args()

    overrides = {**{"audit.enabled": False, "llm.max_tokens": 60}, **parse_overrides(args.set)}
    settings = load_settings(None, overrides)
    persona = load_persona(settings.persona)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        questions = make_questions(args.n, Path(tmp), args.wav_dir)
        for i, (label, path) in enumerate(questions):
            reply = Path(tmp) / f"r{i:02d}.wav"
            started = time.monotonic()
            result = asyncio.run(run_file(settings, persona, path, reply))
            q_audio, q_rate = sf.read(str(path), dtype="float32", always_2d=True)
            r_audio, r_rate = sf.read(str(reply), dtype="float32")
            end = voiced_end(to_mono(q_audio), q_rate)
            sound = first_sound(r_audio, r_rate, end)
            turn = result.turns[0] if result.turns else None
            t = turn.timings() if turn else {}
            row = {
                "question": label,
                "heard": turn.transcript if turn else "",
                "first_piece": turn.generated[0] if turn and turn.generated else "",
                "v2v_ms": None if sound is None else round((sound - end) * 1000, 1),
                "vad_ms": None if not turn or turn.vad_stop is None else round((turn.vad_stop - end) * 1000, 1),
                "stt_ms": t.get("stt_ms"),
                "turn_end_ms": None if not turn or turn.t_llm_start is None or turn.t_transcript is None
                else round((turn.t_llm_start - turn.t_transcript) * 1000, 1),
                "llm_ttft_ms": t.get("llm_ttft_ms"),
                "first_sentence_ms": t.get("first_sentence_ms"),
                "tts_ttfa_ms": t.get("tts_ttfa_ms"),
                "turns": len(result.turns),
                "wall_s": round(time.monotonic() - started, 1),
            }
            rows.append(row)
            print(f"[{i + 1:2d}/{len(questions)}] v2v {row['v2v_ms']} ms  stt {row['stt_ms']}  "
                  f"ttft {row['llm_ttft_ms']}  | {label} -> heard {row['heard']!r}", flush=True)

    print()
    print(f"voicebot latency benchmark: {len(rows)} questions, mode={settings.mode}, llm={settings.llm.provider}, "
          f"stt window {settings.stt.window_secs}s, vad stop {settings.vad.stop_secs}s + turn "
          f"{settings.vad.turn} {settings.vad.turn_timeout_secs}s, speculate {settings.vad.speculate}, "
          f"first piece {settings.tts.first_chunk}")
    print(f"{'stage':<40} {'p50 ms':>8} {'p95 ms':>8} {'n':>4}")
    stages = [
        ("VAD: last voiced sample -> VAD stop", "vad_ms"),
        ("STT: VAD stop -> transcript", "stt_ms"),
        ("turn end: transcript -> LLM answer out", "turn_end_ms"),
        ("LLM: answer out -> first token", "llm_ttft_ms"),
        ("LLM: answer out -> first piece checked", "first_sentence_ms"),
        ("TTS: piece -> first audio", "tts_ttfa_ms"),
        ("voice-to-voice (audio to audio)", "v2v_ms"),
    ]
    for name, key in stages:
        values = [r[key] for r in rows if r[key] is not None]
        print(f"{name:<40} {pct(values, .5):8.0f} {pct(values, .95):8.0f} {len(values):4d}")
    missed = [r["question"] for r in rows if r["v2v_ms"] is None]
    if missed:
        print(f"no answer heard for {len(missed)}: {missed}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
