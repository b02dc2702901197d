"""Cut the LLM's streamed reply into the pieces TTS speaks (with :class:`bot.text_split.TextSplitter`).

Pipecat's TTS service cuts LLM text into sentences itself. This processor, placed between the LLM
and TTS, does the cutting instead so the first piece of a reply can end at a clause break; the TTS
service then speaks each :class:`AggregatedTextFrame` as it comes. The output moderation gate is a
subclass that checks every piece before passing it on.

Piper synthesizes a whole piece before the first sample comes out, and the output moderation gate checks a
whole piece before Piper gets it, so the first piece of a reply sets how soon the bot is heard. Sentences are
the unit everywhere except the first piece: with ``tts.first_chunk = "clause"`` the reply's first piece ends
at its first clause break once it has at least :data:`FIRST_CLAUSE_MIN_WORDS` words. "Well, as far as I know,
the capital of France is Paris." is spoken as "Well, as far as I know," then "the capital of France is
Paris." — each checked before it is spoken. A one- or two-word lead-in ("Sure,") is kept with what follows.
The rest of the reply is cut at sentence ends, since it is synthesized while the first piece plays.

With a ``guard`` (:class:`~bot.prompt_leak.PromptLeakGuard`), a piece that restates the persona's
instructions is withheld before anything else sees it: it is never checked, synthesized or added to the
context, and a :class:`~bot.frames.BotSentenceFrame` with fate ``withheld`` and the reason goes to the audit
log. Every piece gets a :class:`~bot.frames.BotSentenceFrame` (index from 0 per reply).
"""

from __future__ import annotations

from pipecat.frames.frames import (
    AggregatedTextFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType

from bot.frames import BotSentenceFrame, ReplyWithheldFrame
from bot.prompt_leak import PromptLeakGuard
from bot.text_split import Granularity, TextSplitter

FIRST_CLAUSE_MIN_WORDS = 3


class ReplyChunks(FrameProcessor):
    def __init__(self, first_chunk: Granularity = "clause", *, guard: PromptLeakGuard | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        # Not eager: a sentence end waits for the next token, as pipecat's own aggregator does (a reply whose
        # last piece went to TTS before LLMFullResponseEndFrame ended its TTS context with no audio).
        self._splitter = TextSplitter("sentence", first=first_chunk, min_words=FIRST_CLAUSE_MIN_WORDS,
                                      eager=False)
        self._guard = guard
        self._index = 0
        """Index of the next piece of this reply."""
        self._withheld = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.chunk(frame, direction)

    async def piece(self, text: str) -> None:
        """One piece of the reply is ready. Overridden by the moderation gate."""
        await self.push_frame(BotSentenceFrame(index=self._index, text=text, fate="spoken"))
        self._index += 1
        await self.push_frame(AggregatedTextFrame(text, TextType.SENTENCE))

    async def reset(self) -> None:
        self._splitter.reset()
        self._index = 0
        self._withheld = 0

    async def chunk(self, frame: Frame, direction: FrameDirection) -> None:
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMFullResponseStartFrame):
            await self.reset()
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMTextFrame) and not frame.skip_tts:
            for piece in self._splitter.feed(frame.text):
                await self._piece(piece)
        elif isinstance(frame, LLMFullResponseEndFrame):
            rest = self._splitter.flush()
            if rest is not None:
                await self._piece(rest)
            if self._withheld and self._withheld == self._index:
                await self.push_frame(ReplyWithheldFrame())
            await self.reset()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self.reset()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _piece(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        leak = self._guard.check(text) if self._guard is not None else None
        if leak is None:
            await self.piece(text)
            return
        await self.push_frame(BotSentenceFrame(index=self._index, text=text, fate="withheld", reason=leak.reason))
        self._index += 1
        self._withheld += 1
