"""How a streamed reply is cut into the pieces that are checked and spoken.

Piper synthesizes a whole piece before the first sample comes out, and the output moderation gate
checks a whole piece before Piper gets it, so the first piece of a reply sets how soon the bot is
heard. Sentences are the unit everywhere except the first piece: with ``tts.first_chunk = "clause"``
the reply's first piece ends at its first clause break (``,`` ``;`` ``:`` or a dash followed by a
space) once it has at least :data:`MIN_CLAUSE_WORDS` words. "Well, as far as I know, the capital of France is
Paris." is spoken as "Well, as far as I know," then "the capital of France is Paris." — each checked
before it is spoken. A one- or two-word lead-in ("Sure,") is kept with what follows.
The rest of the reply is cut at sentence ends as usual, since it is synthesized while the first
piece plays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_BREAKS = frozenset(",;:\u2013\u2014")
MIN_CLAUSE_WORDS = 3


class ReplyChunker(SimpleTextAggregator):
    """Sentence aggregator that may end a reply's first piece at a clause break.

    Call :meth:`reset` at the start of every reply (the gate does so on ``LLMFullResponseStartFrame``).
    """

    def __init__(self, first_chunk: str = "clause", **kwargs) -> None:
        super().__init__(**kwargs)
        self._clauses = first_chunk == "clause"
        self._emitted = False

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            if not self._emitted and self._clauses and char.isspace() and self._clause_ends_here():
                piece = self._text.strip()
                self._text = ""
                await super().handle_interruption()  # clears the sentence lookahead state with the buffer
                self._emitted = True
                yield Aggregation(text=piece, type=TextType.SENTENCE)
                continue
            async for aggregation in super().aggregate(char):
                self._emitted = True
                yield aggregation

    def _clause_ends_here(self) -> bool:
        body = self._text.rstrip()
        return (len(body) > 0 and body[-1] in CLAUSE_BREAKS and len(body.split()) >= MIN_CLAUSE_WORDS
                and len(body) == len(self._text))  # the break is the buffer's last character

    async def reset(self) -> None:
        await super().reset()
        self._emitted = False

    async def handle_interruption(self) -> None:
        await super().handle_interruption()
        self._emitted = False
