"""Does a transcript sound finished (bot/turn_completion.py)? Whisper-style punctuated text."""

import pytest

from bot.turn_completion import Completion, judge


@pytest.mark.parametrize("text, reason", [
    ("What is the capital of France?", "question"),
    ("Ask what you can do for your country.", "sentence"),
    ("Tell me about the moon!", "exclamation"),
    ("Which?", "question"),
    ("Hi there", "short"),  # Whisper leaves short utterances unpunctuated
    ("  ", "empty"),
])
def test_finished_turns_end_at_the_ordinary_speed(text, reason):
    assert judge(text).completion is Completion.COMPLETE
    assert judge(text).reason == reason


@pytest.mark.parametrize("text, reason", [
    ("And so, my fellow Americans,", "clause_break"),
    ("I was wondering if,", "conjunction"),
    ("ask not what your country can do for you,", "clause_break"),
    ("I went to the shop and", "conjunction"),
    ("I was wondering if.", "conjunction"),  # Whisper ends most segments with a period
    ("It is because", "conjunction"),
    ("Tell me about the history of.", "preposition"),
    ("Could you tell me the", "determiner"),
    ("So the answer is, um", "filler"),
    ("I think that, uh...", "ellipsis"),
    ("Could you tell me the capital", "no_ending"),
])
def test_unfinished_clauses_wait_longer(text, reason):
    judgement = judge(text)
    assert judgement.unfinished, judgement
    assert judgement.reason == reason
