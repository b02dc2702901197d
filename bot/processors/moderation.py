"""Moderation gates of the cascade: text is checked before the LLM sees it and before TTS speaks it.

* :class:`InputModerationGate` sits between the user context aggregator and the LLM. It checks the
  user's finished turn; on a block with action ``refuse`` the turn is taken out of the LLM context,
  the LLM is not called, and the persona's refusal line is spoken instead.
* :class:`OutputModerationGate` sits between the LLM and TTS. It cuts the streamed reply into
  pieces (sentences; the first may end at a clause break, see :mod:`bot.processors.reply_chunks`) and checks
  each before passing it to TTS, so piece 1 is spoken while piece 2 is still being generated. A
  blocked piece is never synthesized: it and the rest of that reply are dropped and the refusal
  line is spoken instead. The assistant context aggregator after the output
  transport then records what was actually played.

Both emit a :class:`~bot.frames.ModerationVerdictFrame` per decision. ``Moderator.check`` never raises
and blocks when a backend fails or is too slow (fail-closed); a gate that gets an exception anyway
treats it the same way.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipecat.frames.frames import (
    AggregatedTextFrame,
    StartFrame,
    Frame,
    LLMContextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType

from bot.context_window import message_text
from bot.frames import BotSentenceFrame, InputRefusedFrame, ModerationVerdictFrame
from bot.persona import Persona
from bot.processors.reply_chunks import ReplyChunks
from bot.turn_speculation import speculated_text
from moderation import Moderator, StageConfig, Verdict


async def check_text(moderator: Moderator, text: str, role: str, persona: Persona) -> Verdict:
    """``moderator.check`` that fails closed even if the moderator breaks its never-raise contract."""
    try:
        return await moderator.check(text, role, persona)
    except Exception as exc:  # the contract says check() never raises; fail closed if it does
        return Verdict(allowed=False, action="refuse", categories=["backend_error"],
                       reason=f"moderator raised {type(exc).__name__}: {exc}; failing closed")


class _Gate(FrameProcessor):
    def __init__(self, moderator: Moderator, stage: StageConfig, persona: Persona, **kwargs) -> None:
        super().__init__(**kwargs)
        self._moderator = moderator
        self._stage = stage
        self._persona = persona

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            # Load the models now, while the user is still talking, not on the first sentence.
            await self._moderator.warmup()
        else:
            await self.gate(frame, direction)

    async def gate(self, frame: Frame, direction: FrameDirection) -> None:
        raise NotImplementedError


class SpeculationHost(Protocol):
    """The end-of-turn strategy that runs speculative answers (:mod:`bot.turn_speculation`)."""

    def is_live(self, text: str) -> bool: ...

    def approve(self, text: str) -> None: ...


def _turn_text(messages: list[Any]) -> tuple[str, list[Any]]:
    """The text of the user's turn (every user message after the last other one) and those messages."""
    tail = []
    for message in reversed(messages):
        if not (isinstance(message, dict) and message.get("role") == "user"):
            break
        tail.append(message)
    tail.reverse()
    return " ".join(message_text(m) for m in tail).strip(), tail


def _without(messages: list[Any], removed: list[Any]) -> list[Any]:
    """``messages`` without the very objects in ``removed`` (by identity: an equal message elsewhere stays)."""
    ids = {id(m) for m in removed}
    return [m for m in messages if id(m) not in ids]


class InputModerationGate(_Gate):
    """Checks the user's turn before the LLM sees it.

    A speculative request (the turn has not ended yet, see :mod:`bot.turn_speculation`) goes on to the
    LLM only if its text is allowed, and is then approved to the ``speculation`` host; a refused one is
    dropped without a word, and the turn end sends the turn again the ordinary way, to be refused then.
    """

    def __init__(self, *args, speculation: SpeculationHost | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._speculation = speculation
        self._last: tuple[str, Verdict] | None = None  # the last check, reused when the same turn comes again

    async def _verdict(self, text: str) -> Verdict:
        """The verdict on ``text``; the last decision is reused for the same text (so a speculative check is
        not repeated at the turn end). A fail-closed verdict (a backend failed or timed out) is no decision
        on the text and is never reused: the next turn with the same words is checked again."""
        if self._last is not None and self._last[0] == text:
            return self._last[1]
        verdict = await check_text(self._moderator, text, "user", self._persona)
        self._last = None if verdict.undecided else (text, verdict)
        return verdict

    async def gate(self, frame: Frame, direction: FrameDirection) -> None:
        if not (isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM):
            await self.push_frame(frame, direction)
            return
        text, turn = _turn_text(frame.context.get_messages())
        if not text:
            await self.push_frame(frame, direction)
            return
        if frame.speculation:
            await self._speculative(frame, text, speculated_text(frame.context))
            return
        verdict = await self._verdict(text)
        await self.push_frame(ModerationVerdictFrame(stage="input", text=text, verdict=verdict.to_dict()))
        if verdict.allowed or self._stage.action != "refuse":
            await self.push_frame(frame, direction)
            return
        # Refused: the LLM never sees this turn, and the bot says the persona's refusal line. The context is
        # shared (Discord text turns, bot/text_chat.py) and may have grown while the moderator decided, so
        # the turn's own messages are removed, wherever they are now, not whatever is at the end.
        frame.context.set_messages(_without(frame.context.get_messages(), turn))
        await self.push_frame(InputRefusedFrame(text=text, refusal=self._persona.refusal))
        await self.push_frame(TTSSpeakFrame(self._persona.refusal))

    async def _speculative(self, frame: LLMContextFrame, text: str, key: str) -> None:
        verdict = await self._verdict(text)
        host = self._speculation
        if host is None or not host.is_live(key):
            return  # withdrawn while it was being checked (or nobody to confirm it): drop it
        if verdict.allowed or self._stage.action != "refuse":
            host.approve(key)
            await self.push_frame(ModerationVerdictFrame(stage="input", text=text, verdict=verdict.to_dict()))
            await self.push_frame(frame, FrameDirection.DOWNSTREAM)


class OutputModerationGate(ReplyChunks):
    """Checks each piece of the reply (:class:`ReplyChunks` does the cutting) before TTS gets it."""

    def __init__(self, moderator: Moderator, stage: StageConfig, persona: Persona, first_chunk: str = "clause",
                 **kwargs) -> None:
        super().__init__(first_chunk, **kwargs)
        self._moderator = moderator
        self._stage = stage
        self._persona = persona
        self._blocked = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            await FrameProcessor.process_frame(self, frame, direction)
            await self.push_frame(frame, direction)
            await self._moderator.warmup()  # load the models while the user is still talking
        else:
            await super().process_frame(frame, direction)

    async def reset(self) -> None:
        await super().reset()
        self._blocked = False

    async def piece(self, text: str) -> None:
        index = self._index
        self._index += 1
        if self._blocked:
            await self.push_frame(BotSentenceFrame(index=index, text=text, fate="dropped"))
            return
        verdict = await check_text(self._moderator, text, "bot", self._persona)
        await self.push_frame(ModerationVerdictFrame(stage="output", text=text, verdict=verdict.to_dict(),
                                                     index=index))
        if verdict.allowed or self._stage.action != "refuse":
            await self.push_frame(BotSentenceFrame(index=index, text=text, fate="spoken"))
            await self.push_frame(AggregatedTextFrame(text, TextType.SENTENCE))
            return
        self._blocked = True
        await self.push_frame(BotSentenceFrame(index=index, text=text, fate="blocked",
                                               spoken_instead=self._persona.refusal))
        await self.push_frame(AggregatedTextFrame(self._persona.refusal, TextType.SENTENCE))
