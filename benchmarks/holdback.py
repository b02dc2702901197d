"""What strict hold-back costs with an ordered transcript (OpenAI Realtime) and an unordered one (Gemini Live),
against the local stand-ins (tests/fake_realtime.py, tests/fake_gemini_live.py) on the same spoken question.

    .venv/bin/python benchmarks/holdback.py [-n RUNS] [--speeds 1,3]

Per provider and server streaming speed (× real time) it runs the question through ``run_file`` (file transport,
real-time pace, real VAD and moderation) and prints the median of: ``v2v_ms`` (user's last voiced sample → first
bot audio, what a user waits), ``holdback_ms`` (first model audio the service received → first released) and
whether the whole answer was played. For Gemini the link also holds the model's turn until the user's transcript
passed input moderation; that wait is inside ``v2v_ms``, not ``holdback_ms``. The stand-ins stream Piper speech of
a two-sentence answer (3.5 s): OpenAI's with each word's transcript just before its audio, Gemini's with each
word's transcript 0.3 s after its audio. They are not the real services: these numbers are the rule's cost, not
the services' latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France. It is on the river Seine."


async def one(provider: str, speed: float, question: Path, work: Path, cert: tuple[Path, Path]) -> dict:
    from bot.config import load_settings
    from bot.persona import load_persona
    from bot.session import run_file
    from fake_gemini_live import FakeGeminiLive, GeminiReply, GeminiScenario
    from fake_realtime import FakeRealtimeServer, Reply, Scenario

    persona = load_persona("default")
    overrides = {"mode": "realtime", "audit.enabled": False, "realtime.provider": provider}
    if provider == "gemini":
        server = FakeGeminiLive(GeminiScenario([QUESTION], [GeminiReply(ANSWER, speed=speed)]), cert)
    else:
        server = FakeRealtimeServer(Scenario([QUESTION], [Reply(ANSWER, speed=speed)]))
    async with server as fake:
        settings = load_settings(None, {**overrides, "realtime.base_url": fake.base_url})
        result = await run_file(settings, persona, question, work / f"reply-{provider}.wav")
    turn = result.turns[0] if result.turns else None
    t = turn.timings() if turn else {}
    return {"v2v_ms": t.get("v2v_ms"), "holdback_ms": t.get("holdback_ms"),
            "played": bool(turn and turn.spoken_text == ANSWER)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2, help="runs per row (default 2)")
    ap.add_argument("--speeds", default="1,3", help="server streaming speeds, × real time (default 1,3)")
    args = ap.parse_args()

    from loguru import logger

    logger.remove()
    from bot.speech import synthesize_to_file
    from fake_gemini_live import make_certificate

    work = Path(tempfile.mkdtemp(prefix="voicebot-holdback-"))
    cert = make_certificate(work)
    os.environ["SSL_CERT_FILE"] = str(cert[0])  # google-genai trusts the stand-in's certificate
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-stand-in")
    question = work / "question.wav"
    synthesize_to_file(QUESTION, question, lead_secs=2.5, tail_secs=8.0)

    rows = []
    for provider in ("openai", "gemini"):
        for speed in [float(s) for s in args.speeds.split(",")]:
            runs = [asyncio.run(one(provider, speed, question, work, cert)) for _ in range(args.n)]

            def med(key: str) -> str:
                vals = [r[key] for r in runs if r[key] is not None]
                return f"{statistics.median(vals):.0f}" if vals else "-"

            rows.append((provider, f"{speed:g}×", med("v2v_ms"), med("holdback_ms"),
                         f"{sum(r['played'] for r in runs)}/{len(runs)}"))
    print("| provider (stand-in) | streams at | v2v_ms | holdback_ms | whole answer played |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
