"""Issue 17, probe 1: the conversation memory is bounded, so a long session answers its last turn.

Accelerated pace: the turns go straight to the real embedded LLM service (SmolLM2 in llama.cpp, with a
small ``llm.n_ctx``) as the cascade's user aggregator would send them, one after the other, with the
bot's answers added to the conversation; no audio, no waiting for real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot.config import LLMConfig
from bot.context_window import MESSAGE_OVERHEAD, REFILL, ContextOverflow, ContextWindow, EstimateCounter
from bot.errors import VoicebotError
from bot.frames import ContextTrimmedFrame, TurnFailedFrame
from bot.persona import Persona, load_persona
from bot.services.llm import make_llm

QUESTIONS = [
    "What is the capital of France and why is it famous?",
    "Tell me something interesting about the moon.",
    "How do bees make honey?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue during the day?",
    "What is a good name for a small grey cat?",
]
TURNS = 6
N_CTX = 256
MAX_TOKENS = 24


class Collector(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.turn_over = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, (LLMFullResponseEndFrame, TTSSpeakFrame)):
                self.turn_over.set()
        await self.push_frame(frame, direction)


async def converse(service, turns: int) -> list[dict]:
    """Ask ``turns`` questions in one conversation; per turn: the answer text and what else happened."""
    context = LLMContext()
    sink = Collector()
    worker = PipelineWorker(Pipeline([service, sink]), params=PipelineParams(), idle_timeout_secs=None,
                            enable_rtvi=False, check_dangling_tasks=False)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    results = []
    try:
        for n in range(turns):
            context.add_message({"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]})
            start = len(sink.frames)
            sink.turn_over.clear()
            await worker.queue_frame(LLMContextFrame(context))
            await asyncio.wait_for(sink.turn_over.wait(), timeout=120)
            await asyncio.sleep(0.05)  # the fallback line follows a failure notice
            frames = sink.frames[start:]
            text = "".join(f.text for f in frames if isinstance(f, LLMTextFrame)).strip()
            fallback = " ".join(f.text for f in frames if isinstance(f, TTSSpeakFrame))
            context.add_message({"role": "assistant", "content": text or fallback})
            results.append({"text": text, "fallback": fallback,
                            "failed": [f for f in frames if isinstance(f, TurnFailedFrame)],
                            "trimmed": [f for f in frames if isinstance(f, ContextTrimmedFrame)],
                            "messages": len(context.get_messages())})
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(running), timeout=10)
        except TimeoutError:
            await worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
    return results


def embedded(persona: Persona | None = None):
    cfg = LLMConfig(provider="embedded", n_ctx=N_CTX, max_tokens=MAX_TOKENS, temperature=0.0, n_threads=1)
    return make_llm(cfg, persona or load_persona("default")).service


def test_long_conversation_answers_its_last_turn_as_well_as_its_first() -> None:
    service = embedded()
    assert service.window is not None and service.window.counter.name == "llama.cpp tokenizer"
    results = asyncio.run(converse(service, TURNS))
    assert all(r["text"] and not r["failed"] for r in results), [(r["text"][:30], r["failed"]) for r in results]
    trims = [t.data for r in results for t in r["trimmed"]]
    assert trims, "the conversation outgrew llm.n_ctx, so older turns must have been left out"
    assert all(t["context_tokens"] <= t["budget_tokens"] == N_CTX - MAX_TOKENS - 16 for t in trims)
    # Each message is reported once, oldest first, when it is first left out: questions 1, 2, ... in order.
    dropped = [d for t in trims for d in t["dropped"]]
    asked = [d["text"] for d in dropped if d["role"] == "user"]
    assert asked == [QUESTIONS[n % len(QUESTIONS)] for n in range(len(asked))]
    assert all(d["tokens"] > 0 for d in dropped) and trims[-1]["left_out_messages"] >= len(asked)


def test_without_the_window_turns_fail_but_are_never_silent() -> None:
    """What main did (every turn after the window filled failed, silently); now each says the fallback."""
    service = embedded()
    service.window = None
    results = asyncio.run(converse(service, TURNS))
    failed = [r for r in results if r["failed"]]
    assert failed, "with no bound the conversation must overflow n_ctx"
    assert all(r["fallback"] == load_persona("default").fallback for r in failed)
    assert "context window" in failed[0]["failed"][0].reason
    assert results[0]["text"]  # the first turn was fine


def test_persona_that_cannot_fit_is_refused_at_start(tmp_path: Path) -> None:
    huge = Persona(name="Huge", system_prompt="You are a very helpful assistant. " * 400)
    with pytest.raises(VoicebotError, match=r"system_prompt .* is \d+ tokens .* llm.n_ctx = 512"):
        make_llm(LLMConfig(provider="scripted", script=["Hi."], n_ctx=512), huge)
    with pytest.raises(VoicebotError, match="llm.max_tokens = 600"):
        make_llm(LLMConfig(provider="scripted", script=["Hi."], n_ctx=512, max_tokens=600), load_persona("default"))


def test_fit_keeps_the_turn_and_drops_whole_exchanges() -> None:
    window = ContextWindow(n_ctx=256, reply_tokens=40, counter=EstimateCounter(), system="s" * 30)
    msgs = []
    for n in range(12):
        msgs += [{"role": "user", "content": f"question {n} " + "x" * 30},
                 {"role": "assistant", "content": f"answer {n} " + "y" * 30}]
    msgs.append({"role": "user", "content": "the last question"})
    kept, trim = window.fit(msgs)
    assert kept[-1]["content"] == "the last question" and kept[0]["role"] == "user"
    assert trim.tokens <= window.budget and trim.dropped and len(trim.dropped) % 2 == 0
    assert [m["text"] for m in trim.dropped[:2]] == [msgs[0]["content"], msgs[1]["content"]]
    assert kept == msgs[len(trim.dropped):] and trim.indices == list(range(len(trim.dropped)))
    assert trim.audit(window, since=2)["dropped_messages"] == len(trim.dropped) - 2
    # The cut goes down to REFILL of the budget, so the next turns keep the same prompt start (prefix cache).
    assert trim.tokens <= window.budget * REFILL and trim.upto == len(trim.dropped)
    longer = msgs + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
    kept2, trim2 = window.fit(longer, keep_from=trim.upto)
    assert kept2[0] is kept[0] and trim2.upto == trim.upto and trim2.audit(window, since=trim.upto)["dropped"] == []
    with pytest.raises(ContextOverflow, match="does not fit"):
        window.fit([{"role": "user", "content": "z" * 3 * (window.budget - MESSAGE_OVERHEAD)}])
