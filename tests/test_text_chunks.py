"""How a streamed reply is cut into pieces for moderation and TTS (bot/text_chunks.py)."""

import asyncio

import pytest

from bot.text_chunks import ReplyChunker


def cut(text: str, first_chunk: str = "clause", step: int = 3) -> list[str]:
    """Feed ``text`` in ``step``-character tokens, as an LLM streams it, and collect the pieces."""

    async def go():
        chunker = ReplyChunker(first_chunk)
        await chunker.reset()
        out = []
        for i in range(0, len(text), step):
            async for piece in chunker.aggregate(text[i:i + step]):
                out.append(piece.text)
        rest = await chunker.flush()
        if rest is not None and rest.text:
            out.append(rest.text)
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("step", [1, 3, 50])
def test_first_piece_ends_at_the_first_clause_break(step):
    text = "Well, as far as I know, the capital of France is Paris. It is big, old, and pretty."
    assert cut(text, step=step) == ["Well, as far as I know,", "the capital of France is Paris.",
                                    "It is big, old, and pretty."]


def test_sentence_mode_keeps_whole_sentences():
    text = "Well, as far as I know, the capital of France is Paris. It is big, old, and pretty."
    assert cut(text, "sentence") == ["Well, as far as I know, the capital of France is Paris.",
                                     "It is big, old, and pretty."]


def test_short_lead_ins_numbers_and_abbreviations_are_not_cut():
    assert cut("Sure, here it is. Dr. Smith, who is 1,000 years old, said hi.") == [
        "Sure, here it is.", "Dr. Smith, who is 1,000 years old, said hi."]
    assert cut("Hi!") == ["Hi!"]


def test_only_the_first_piece_of_each_reply_may_be_a_clause():
    async def two_replies():
        chunker = ReplyChunker("clause")
        pieces = []
        for reply in ["One two three, four five. Six seven eight, nine.", "Ten eleven twelve; thirteen."]:
            await chunker.reset()
            async for piece in chunker.aggregate(reply):
                pieces.append(piece.text)
            rest = await chunker.flush()
            pieces.append(rest.text)
        return pieces

    assert asyncio.run(two_replies()) == ["One two three,", "four five.", "Six seven eight, nine.",
                                          "Ten eleven twelve;", "thirteen."]
