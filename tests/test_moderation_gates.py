"""The cascade's moderation gates (bot/processors/moderation.py), driven directly with a scripted moderator.

No models and no pipeline: the gate's ``push_frame`` is replaced by a list, so each test sees exactly what
the gate let through. Async code is driven with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.frames.frames import LLMContextFrame, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection

from bot.frames import InputRefusedFrame, ModerationVerdictFrame
from bot.persona import Persona
from bot.processors.moderation import InputModerationGate
from moderation import Moderator, StageConfig, Verdict

PERSONA = Persona(name="Nova", system_prompt="You are Nova.")

ALLOW = Verdict(allowed=True, action="allow", reason="fine")
BLOCK = Verdict(allowed=False, action="refuse", categories=["insult"], reason="insult 0.90 >= 0.50")
TIMEOUT = Verdict(allowed=False, action="refuse", categories=["backend_error"],
                  reason="backend classifier failed: timed out after 500 ms; failing closed")


class Scripted(Moderator):
    """Answers each check with the next verdict of ``verdicts``, after ``during`` ran (the await's window)."""

    def __init__(self, *verdicts: Verdict, during=None) -> None:
        self.verdicts = list(verdicts)
        self.during = during
        self.checked: list[str] = []

    async def check(self, text: str, role: str = "user", persona: Any = None) -> Verdict:
        self.checked.append(text)
        await asyncio.sleep(0.01)  # slow enough that the rest of the bot moves on meanwhile
        if self.during is not None:
            self.during()
        return self.verdicts.pop(0)


def input_gate(moderator: Moderator) -> tuple[InputModerationGate, list[Any]]:
    gate = InputModerationGate(moderator, StageConfig(action="refuse"), PERSONA)
    pushed: list[Any] = []

    async def push_frame(frame, direction=FrameDirection.DOWNSTREAM):
        pushed.append(frame)

    gate.push_frame = push_frame  # type: ignore[method-assign]
    return gate, pushed


def turn(context: LLMContext, gate: InputModerationGate) -> None:
    asyncio.run(gate.gate(LLMContextFrame(context=context), FrameDirection.DOWNSTREAM))


# ---- input gate: a refused turn leaves the shared context, and only it ----------------------------

def test_a_refused_turn_leaves_the_context_even_when_it_grew_while_the_moderator_decided() -> None:
    context = LLMContext([{"role": "assistant", "content": "Hello, I am Nova."},
                          {"role": "user", "content": "you are a worthless idiot"}])
    text_turn = [{"role": "user", "content": "what is the capital of France?"},
                 {"role": "assistant", "content": "Paris."}]

    def a_text_turn_is_answered() -> None:  # Discord: TextConversation shares this context (bot/text_chat.py)
        for message in text_turn:
            context.add_message(message)

    gate, pushed = input_gate(Scripted(BLOCK, during=a_text_turn_is_answered))
    turn(context, gate)

    contents = [m["content"] for m in context.get_messages()]
    assert "you are a worthless idiot" not in contents  # the refused text never reaches the LLM
    assert contents == ["Hello, I am Nova.", "what is the capital of France?", "Paris."]  # the rest stays
    assert not any(isinstance(f, LLMContextFrame) for f in pushed)
    assert [f.text for f in pushed if isinstance(f, TTSSpeakFrame)] == [PERSONA.refusal]
    assert [f.text for f in pushed if isinstance(f, InputRefusedFrame)] == ["you are a worthless idiot"]


def test_a_refused_turn_of_several_messages_leaves_the_context_whole() -> None:
    context = LLMContext([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                          {"role": "user", "content": "you are"}, {"role": "user", "content": "a worthless idiot"}])
    gate, pushed = input_gate(Scripted(BLOCK, during=lambda: context.add_message({"role": "user", "content": "hi"})))
    turn(context, gate)
    # The earlier "hi" and the one added meanwhile are equal to each other but are other messages: they stay.
    assert [m["content"] for m in context.get_messages()] == ["hi", "Hello.", "hi"]
    assert [f.text for f in pushed if isinstance(f, ModerationVerdictFrame)] == ["you are a worthless idiot"]


# ---- input gate: a fail-closed verdict is not reused ----------------------------------------------

def test_a_timed_out_check_is_not_reused_for_the_same_words() -> None:
    moderator = Scripted(TIMEOUT, ALLOW)
    gate, pushed = input_gate(moderator)
    context = LLMContext([{"role": "user", "content": "what is the weather like"}])
    turn(context, gate)
    assert [f.text for f in pushed if isinstance(f, TTSSpeakFrame)] == [PERSONA.refusal]  # fail-closed
    assert context.get_messages() == []

    pushed.clear()
    context.add_message({"role": "user", "content": "what is the weather like"})  # the user says it again
    turn(context, gate)
    assert moderator.checked == ["what is the weather like"] * 2  # checked again, not refused from memory
    assert [f.verdict["allowed"] for f in pushed if isinstance(f, ModerationVerdictFrame)] == [True]
    assert any(isinstance(f, LLMContextFrame) for f in pushed)
    assert not any(isinstance(f, TTSSpeakFrame) for f in pushed)


def test_a_real_decision_is_still_handed_from_the_speculative_check_to_the_turn_end() -> None:
    class Host:
        def is_live(self, text: str) -> bool:
            return True

        def approve(self, text: str) -> None:
            pass

    moderator = Scripted(ALLOW)
    gate, pushed = input_gate(moderator)
    gate._speculation = Host()
    context = LLMContext([{"role": "user", "content": "tell me a joke"}])
    asyncio.run(gate.gate(LLMContextFrame(context=context, speculation=object()), FrameDirection.DOWNSTREAM))
    turn(context, gate)
    assert moderator.checked == ["tell me a joke"]  # once: the turn end reused the speculative verdict
    assert sum(isinstance(f, LLMContextFrame) for f in pushed) == 2
