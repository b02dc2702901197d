"""Does this transcript sound finished? The text half of the end-of-turn decision.

A speaker who pauses mid-thought ("I was wondering if, [pause] maybe, ...", "And so, my fellow Americans,
[pause] ask not ...") leaves a transcript that ends on a clause break, a conjunction, a preposition, an
article or a filler word. A finished question or sentence ends on ``?``, ``!`` or ``.`` after a content
word. :func:`judge` tells the two apart from the text alone; the end-of-turn strategy
(:mod:`bot.turn_speculation`) waits longer (``vad.unfinished_wait_secs``) when the text is unfinished
and ends a finished one at the ordinary speed.

This is deliberately a small, explainable rule set over Whisper's punctuated output, not a model: it costs
microseconds and its mistakes can be read off the reason it gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Completion(StrEnum):
    COMPLETE = "complete"
    UNFINISHED = "unfinished"


Reason = Literal["empty", "question", "exclamation", "sentence", "short", "clause_break", "ellipsis",
                 "conjunction", "preposition", "determiner", "filler", "no_ending"]


@dataclass(frozen=True)
class Judgement:
    completion: Completion
    reason: Reason
    """Why: the ending that decided it (``conjunction`` for "... and", ``clause_break`` for "... Americans,")."""

    @property
    def unfinished(self) -> bool:
        return self.completion is Completion.UNFINISHED


CONJUNCTIONS = frozenset(
    "and but or nor so yet because if that which who whom whose when whenever where whereas while although "
    "though unless until since as than whether then plus".split())
PREPOSITIONS = frozenset(
    "of to in on at for with from by about into onto upon like through over after before between under "
    "without within around towards toward across against among during per via".split())
DETERMINERS = frozenset(
    "the a an my your our their his her its this these those some any every each no another such what "
    "whatever which".split())
FILLERS = frozenset("um umm uh uhh uhm erm er ah ahh eh hmm mm mhm".split())
"""Hesitations. "well", "like" and "you know" are ambiguous at a sentence end ("I know it well.") and are
left to the other rules ("like" is a preposition)."""

_WORD = re.compile(r"[a-z']+")
SHORT_WORDS = 3
"""An unpunctuated utterance of at most this many words counts as finished."""
_ELLIPSIS = ("...", "…")


def last_word(text: str) -> str:
    words = _WORD.findall(text.lower().replace("’", "'"))
    return words[-1] if words else ""


def judge(text: str) -> Judgement:
    """Judge a user turn's transcript so far (all its segments joined)."""
    stripped = text.strip().rstrip("\"')]»”’ ")
    if not _WORD.search(stripped.lower()):
        return Judgement(Completion.COMPLETE, "empty")  # nothing to go on: the acoustic wait decides
    if stripped.endswith(_ELLIPSIS):
        return Judgement(Completion.UNFINISHED, "ellipsis")
    end = stripped[-1]
    if end == "?":
        return Judgement(Completion.COMPLETE, "question")
    if end == "!":
        return Judgement(Completion.COMPLETE, "exclamation")
    word = last_word(stripped)
    # A question or exclamation mark is Whisper hearing a finished intonation ("Which?"). Otherwise a
    # dangling function word outweighs the period it puts at the end of almost every segment: "so I went
    # to the." is still waiting for its noun.
    if word in FILLERS:
        return Judgement(Completion.UNFINISHED, "filler")
    if word in CONJUNCTIONS:
        return Judgement(Completion.UNFINISHED, "conjunction")
    if word in PREPOSITIONS:
        return Judgement(Completion.UNFINISHED, "preposition")
    if word in DETERMINERS:
        return Judgement(Completion.UNFINISHED, "determiner")
    if end == ".":
        return Judgement(Completion.COMPLETE, "sentence")
    if end in ",;:-–—":
        return Judgement(Completion.UNFINISHED, "clause_break")
    if len(_WORD.findall(stripped.lower())) <= SHORT_WORDS:
        # Whisper often leaves a short utterance unpunctuated ("Hi there", "Yes"): not a sign of a pause.
        return Judgement(Completion.COMPLETE, "short")
    return Judgement(Completion.UNFINISHED, "no_ending")
