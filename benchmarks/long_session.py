"""Long sessions: does the last turn get answered as well as the first? (issue 17, bounded memory)

Asks N questions in one conversation through the real LLM service (the embedded SmolLM2 by default; no
audio, so it runs at accelerated pace: each turn as soon as the previous answer is in) with a given
``llm.n_ctx``, once with the context window (``bot/context_window.py``) and once without it (what main
did before: the conversation grew until llama.cpp refused it). Prints, per tenth of the session, how many
turns were answered by the model, how many failed (the persona's fallback line spoken instead), the
request's prompt size and the time to the end of the answer.

    .venv/bin/python benchmarks/long_session.py                   # 40 turns, n_ctx 512
    .venv/bin/python benchmarks/long_session.py -n 120 --n-ctx 2048 --set llm.max_tokens=60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.frames import ContextTrimmedFrame, TurnFailedFrame  # noqa: E402
from bot.persona import load_persona  # noqa: E402
from bot.services.llm import make_llm  # noqa: E402

QUESTIONS = [
    "What is the capital of France and why is it famous?",
    "Tell me something interesting about the moon.",
    "How do bees make honey?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue during the day?",
    "What is a good name for a small grey cat?",
    "How far away is the sun?",
    "Can you suggest a short walk for a rainy day?",
]


class Sink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, (LLMFullResponseEndFrame, TTSSpeakFrame)):
                self.done.set()
        await self.push_frame(frame, direction)


async def session(service, turns: int) -> list[dict]:
    context, sink = LLMContext(), Sink()
    worker = PipelineWorker(Pipeline([service, sink]), params=PipelineParams(), idle_timeout_secs=None,
                            enable_rtvi=False, check_dangling_tasks=False)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    rows = []
    try:
        for n in range(turns):
            context.add_message({"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]})
            start, t0 = len(sink.frames), time.monotonic()
            sink.done.clear()
            await worker.queue_frame(LLMContextFrame(context))
            await asyncio.wait_for(sink.done.wait(), timeout=300)
            await asyncio.sleep(0.02)
            frames = sink.frames[start:]
            text = "".join(f.text for f in frames if isinstance(f, LLMTextFrame)).strip()
            said = text or " ".join(f.text for f in frames if isinstance(f, TTSSpeakFrame))
            context.add_message({"role": "assistant", "content": said})
            trims = [f.data for f in frames if isinstance(f, ContextTrimmedFrame)]
            rows.append({"answered": bool(text), "failed": any(isinstance(f, TurnFailedFrame) for f in frames),
                         "silent": not said, "secs": time.monotonic() - t0,
                         "prompt": trims[-1]["context_tokens"] if trims else None})
    finally:
        await worker.queue_frame(EndFrame())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(running), timeout=10)
        if not running.done():
            await worker.cancel()
    return rows


def table(label: str, rows: list[dict]) -> None:
    print(f"\n{label}")
    print("| turns | answered by the model | failed (fallback spoken) | silent | p50 s to answer | prompt tokens |")
    print("| --- | --- | --- | --- | --- | --- |")
    step = max(1, len(rows) // 10)
    for i in range(0, len(rows), step):
        part = rows[i:i + step]
        prompts = [r["prompt"] for r in part if r["prompt"]]
        print(f"| {i + 1}-{i + len(part)} | {sum(r['answered'] for r in part)} | {sum(r['failed'] for r in part)} "
              f"| {sum(r['silent'] for r in part)} | {statistics.median(r['secs'] for r in part):.2f} "
              f"| {max(prompts) if prompts else '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=40, help="turns in the session")
    parser.add_argument("--n-ctx", type=int, default=512, help="llm.n_ctx")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    overrides = {"llm.n_ctx": args.n_ctx, "llm.max_tokens": 40, "llm.temperature": 0.0}
    for pair in args.set:
        key, value = pair.split("=", 1)
        overrides[key] = value
    settings = load_settings(None, overrides)
    persona = load_persona(settings.persona)
    print(f"{args.n} turns, llm.provider={settings.llm.provider}, n_ctx={settings.llm.n_ctx}, "
          f"max_tokens={settings.llm.max_tokens}")
    bounded = make_llm(settings.llm, persona).service
    table("with the context window (bot/context_window.py)", asyncio.run(session(bounded, args.n)))
    unbounded = make_llm(settings.llm, persona).service
    unbounded.window = None  # what main did before issue 17
    table("without it (before issue 17)", asyncio.run(session(unbounded, args.n)))


if __name__ == "__main__":
    main()
