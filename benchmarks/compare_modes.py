"""The README's comparison: the cascade on the embedded models vs the end-to-end modes against the local
protocol-faithful stand-ins (tests/fake_realtime.py, tests/fake_audio_llm.py), on the same synthesized audio,
through ``voicebot compare``'s own code. Prints the terminal tables and writes the report.

    .venv/bin/python benchmarks/compare_modes.py [--out-dir DIR]

The stand-ins speak the real protocols (validated with the openai package's types) but do not understand
audio: their transcripts and answers are scripted per question, including one unsafe answer so the realtime
hold-back has something to hold back. So the end-to-end rows measure the plumbing (network round trips on
loopback, hold-back, moderation, playout), not a model's quality; the cascade row is the real embedded
SmolLM2 / Whisper tiny.en / Piper. Point ``--realtime-url`` / ``--audio-llm-url`` at a real service to
compare against it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

QUESTIONS = [
    ("What is the capital of France?", "Paris is the capital of France. It is on the river Seine."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("You are a stupid worthless idiot.", "I'd rather keep things friendly."),
    ("Tell me something about the moon.", "The moon is lovely tonight. You are a stupid worthless idiot."),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--realtime-url", default=None, help="a real Realtime API server instead of the stand-in")
    ap.add_argument("--audio-llm-url", default=None, help="a real OpenAI-compatible audio-in server")
    args = ap.parse_args()

    from loguru import logger

    logger.remove()
    from bot.compare.inputs import resolve_inputs
    from bot.compare.report import summary_table, turns_table, write_outputs
    from bot.compare.runner import BaseConfig, run_comparison
    from bot.compare.variants import Variant
    from bot.speech import synthesize_to_file
    from fake_audio_llm import FakeAudioLLM
    from fake_realtime import FakeRealtimeServer, Reply, Scenario

    out = args.out_dir or Path(tempfile.mkdtemp(prefix="voicebot-compare-"))
    audio_dir = out / "questions"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for n, (q, _) in enumerate(QUESTIONS, 1):
        synthesize_to_file(q, audio_dir / f"q{n}.wav", lead_secs=0.5, tail_secs=0.5)
        (audio_dir / f"q{n}.txt").write_text(q)
    inputs = resolve_inputs([audio_dir])
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-stand-in")

    async def go():
        scenario = Scenario(transcripts=[q for q, _ in QUESTIONS],
                            replies=[Reply(text=a) for q, a in QUESTIONS if "idiot" not in q])
        async with FakeRealtimeServer(scenario) as fake_rt:
            with FakeAudioLLM([a for q, a in QUESTIONS if "idiot" not in q]) as fake_al:
                variants = [
                    Variant(name="cascade (embedded)", overrides={"mode": "pipeline"}),
                    Variant(name="audio-llm (stand-in)", overrides={
                        "mode": "audio-llm", "audio_llm.model": "fake/ultravox",
                        "audio_llm.base_url": args.audio_llm_url or fake_al.base_url}),
                    Variant(name="realtime (stand-in)", overrides={
                        "mode": "realtime", "realtime.base_url": args.realtime_url or fake_rt.base_url}),
                ]
                return await run_comparison(variants, inputs, BaseConfig(), out,
                                            progress=lambda m: print(m, file=sys.stderr))

    result = asyncio.run(go())
    html, js = write_outputs(result, out)
    print(turns_table(result), end="")
    print(summary_table(result), end="")
    print(f"report: {html}\njson: {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
