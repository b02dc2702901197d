"""bot.text_split: the one sentence/clause splitter (reply pieces, turn sentences, realtime hold-back)."""

import re

import pytest

from bot.processors.reply_chunks import FIRST_CLAUSE_MIN_WORDS
from bot.text_split import TextSplitter, boundaries, split, split_sentences


def cut(text: str, first_chunk: str = "clause", step: int = 3) -> list[str]:
    """Feed ``text`` in ``step``-character tokens, as an LLM streams it, and collect the reply pieces."""
    splitter = TextSplitter("sentence", first=first_chunk, min_words=FIRST_CLAUSE_MIN_WORDS)
    out = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i:i + step])
    rest = splitter.flush()
    return out + ([rest] if rest else [])


@pytest.mark.parametrize("text, sentences", [
    ("Dr. Smith is here. He is 3.5 m tall.", ["Dr. Smith is here.", "He is 3.5 m tall."]),
    ("Mrs. Jones met Prof. Lee at St. Paul's.", ["Mrs. Jones met Prof. Lee at St. Paul's."]),
    ("Wait... what? Really?! Yes.", ["Wait... what?", "Really?!", "Yes."]),
    ("Well... maybe. OK.", ["Well... maybe.", "OK."]),
    ("Hmm\u2026 Let me think.", ["Hmm\u2026", "Let me think."]),
    ('"Really?" she asked. Then she left.', ['"Really?" she asked.', "Then she left."]),
    ('He said "Hi." Then he left.', ['He said "Hi."', "Then he left."]),
    ("He said \u201cHi!\u201d Then he left.", ["He said \u201cHi!\u201d", "Then he left."]),
    ("(See the map.) It is north.", ["(See the map.)", "It is north."]),
    ("I live in the U.S. It is big.", ["I live in the U.S.", "It is big."]),
    ("The U.S. is big.", ["The U.S. is big."]),
    ("Fruit, e.g. apples, is sweet.", ["Fruit, e.g. apples, is sweet."]),
    ("Apples, pears, etc. and more.", ["Apples, pears, etc. and more."]),
    ("Apples, pears, etc. Then more.", ["Apples, pears, etc.", "Then more."]),
    ("J. R. R. Tolkien wrote it.", ["J. R. R. Tolkien wrote it."]),
    ("1. First do this.\n2. Then that.", ["1. First do this.", "2. Then that."]),
    ("It costs $3.50. Cheap.", ["It costs $3.50.", "Cheap."]),
    ("I am 25. You?", ["I am 25.", "You?"]),
    ("The answer is no. Sorry.", ["The answer is no.", "Sorry."]),
    ("See No. 5 at 3:30 p.m. today.", ["See No. 5 at 3:30 p.m. today."]),
    ("no punctuation at all", ["no punctuation at all"]),
    ("  ", []),
    ("Hi!", ["Hi!"]),
])
def test_sentences(text, sentences):
    assert split_sentences(text) == sentences
    # Streamed a word at a time (as an LLM or a transcript streams it), the same sentences come out.
    splitter = TextSplitter()
    pieces = [p for token in re.findall(r"\s*\S+", text) for p in splitter.feed(token)]
    rest = splitter.flush()
    assert pieces + ([rest] if rest else []) == sentences


def test_clauses():
    assert split("Well, I think so; yes.", "clause") == ["Well,", "I think so;", "yes."]
    assert split("Paris \u2014 the capital - is big: yes, 1,000 years old.", "clause") == [
        "Paris \u2014", "the capital -", "is big:", "yes,", "1,000 years old."]
    assert split("Sure, it is. Ok.", "clause", min_words=3) == ["Sure, it is.", "Ok."]
    assert boundaries("A, b. C", "clause") == [2, 5]
    with pytest.raises(ValueError, match="granularity"):
        split("x", "word")  # type: ignore[arg-type]


def test_streaming_waits_where_the_next_characters_decide():
    s = TextSplitter()
    assert s.feed("Paris is the capital.") == ["Paris is the capital."]  # taken at once
    assert s.feed(" Ask Dr.") == [] and s.feed(" Smith.") == ["Ask Dr. Smith."]
    assert s.feed(" It is 3.") == [] and s.feed("5 m.") == ["It is 3.5 m."]
    assert s.feed(' He said "Hi.') == [] and s.feed('" Bye') == ['He said "Hi."']
    assert s.feed(" now...") == [] and s.feed(" or") == [] and s.flush() == "Bye now... or"
    assert s.pending == ""


def test_word_cap():
    capped = TextSplitter("sentence", max_words=3)
    assert capped.feed("one two three four") == ["one two three"]
    assert capped.feed(" five. six") == ["four five."]
    assert capped.flush() == "six"


@pytest.mark.parametrize("step", [1, 3, 50])
def test_first_reply_piece_ends_at_the_first_clause_break(step):
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
    splitter = TextSplitter("sentence", first="clause", min_words=FIRST_CLAUSE_MIN_WORDS)
    pieces = []
    for reply in ["One two three, four five. Six seven eight, nine.", "Ten eleven twelve; thirteen."]:
        pieces += splitter.feed(reply)
        rest = splitter.flush()  # the end of a reply: the next one starts afresh
        assert rest is None
    assert pieces == ["One two three,", "four five.", "Six seven eight, nine.", "Ten eleven twelve;", "thirteen."]


def test_not_eager_waits_for_the_next_character_after_every_sentence_end():
    s = TextSplitter(eager=False)
    assert s.feed("Paris is the capital.") == []
    assert s.feed(" It") == ["Paris is the capital."]
    assert s.feed(" is big!") == [] and s.flush() == "It is big!"
