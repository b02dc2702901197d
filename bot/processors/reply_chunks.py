"""Cut the LLM's streamed reply into the pieces TTS speaks (see :mod:`bot.text_chunks`).

Pipecat's TTS service cuts LLM text into sentences itself. This processor, placed between the LLM
and TTS, does the cutting instead so the first piece of a reply can end at a clause break; the TTS
service then speaks each :class:`AggregatedTextFrame` as it comes. The output moderation gate is a
subclass that checks every piece before passing it on.
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

from bot.text_chunks import ReplyChunker


class ReplyChunks(FrameProcessor):
    def __init__(self, first_chunk: str = "clause", **kwargs) -> None:
        super().__init__(**kwargs)
        self._chunker = ReplyChunker(first_chunk)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.chunk(frame, direction)

    async def piece(self, text: str) -> None:
        """One piece of the reply is ready. Overridden by the moderation gate."""
        await self.push_frame(AggregatedTextFrame(text, TextType.SENTENCE))

    async def reset(self) -> None:
        await self._chunker.reset()

    async def chunk(self, frame: Frame, direction: FrameDirection) -> None:
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMFullResponseStartFrame):
            await self.reset()
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMTextFrame) and not frame.skip_tts:
            async for aggregation in self._chunker.aggregate(frame.text):
                await self._piece(aggregation.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            rest = await self._chunker.flush()
            if rest is not None:
                await self._piece(rest.text)
            await self.reset()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self.reset()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _piece(self, text: str) -> None:
        text = text.strip()
        if text:
            await self.piece(text)
