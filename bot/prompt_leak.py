"""Keeps the persona's instructions out of what the bot says.

A small model (the embedded SmolLM2-135M) sometimes answers with its system prompt instead of an answer:
asked "What is the colour of the sky on a clear day?", it said "Clear name: no lists, no markdown, no emoji,
no code." :class:`PromptLeakGuard` recognises a reply piece that restates the persona's instructions so the
piece is withheld before it is checked by moderation or synthesized (see
:class:`~bot.processors.reply_chunks.ReplyChunks`); the audit log records it as ``withheld`` with the reason.

What counts as the instructions: the persona's ``style`` and every sentence of its ``system_prompt`` except
the ones that name the persona ("You are Nova, a friendly ...": saying who it is is fine). A piece restates
them when, after dropping filler words (articles, pronouns, forms of "be"),

* at least half of its word pairs are word pairs of the instructions, and at least two are
  ("no lists, no markdown"), or
* a third of its word pairs are word pairs of the instructions made of *style words* (or "no") only ("Clear
  name: no lists,": a reply's first piece may be that short; "the answer is one" is not), or
* a short piece (up to three words) is one of those word pairs ("Plain words."), or
* at least three of its style words make 60 % of its longer words ("No lists, markdown, emoji or
  code.").

A *style word* is a word of four letters or more that the ``style`` uses and the rest of the prompt does not
(so a pirate may still talk about pirates).

Pure string rules, no model: cheap enough to run on every piece.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.persona import Persona
from bot.text_split import split_sentences

FILLER = frozenset(
    "a an the and or but to of in on at for with by as so i you me my your yours we us our it its this that these "
    "those is are am be been being was were will would shall should do does did can could just very".split())
"""Words dropped before comparing: they carry the grammar of a restatement, not its content."""
MIN_SHARED_PAIRS = 2
MIN_PAIR_SHARE = 0.5
STRONG_PAIR_SHARE = 1 / 3
MIN_STYLE_WORDS = 3
MIN_STYLE_SHARE = 0.6
LONG_WORD = 4
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


SAME = {"without": "no", "not": "no", "never": "no"}
"""Words that say the same in a rule: "without lists" restates "no lists"."""


def content_words(text: str) -> list[str]:
    """Lower-case words of ``text`` without :data:`FILLER`, with :data:`SAME` folded."""
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return [SAME.get(w, w) for w in words if w not in FILLER]


def _pairs(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


@dataclass(frozen=True)
class Leak:
    """Why a piece was withheld."""

    reason: str
    matched: str
    """The instruction text it restates (the sentence with the most pairs in common)."""


class PromptLeakGuard:
    """Recognises reply text that restates a persona's instructions (see the module docstring)."""

    def __init__(self, style: str, prompt_sentences: list[str]) -> None:
        self._sentences = [s for s in split_sentences(style) + prompt_sentences if content_words(s)]
        self._pairs = _pairs_of(self._sentences)
        prompt_words = {w for s in prompt_sentences for w in content_words(s)}
        self._style_words = {w for w in content_words(style) if len(w) >= LONG_WORD and not w.isdigit()} - \
            prompt_words
        self._rule_words = self._style_words | {"no"}

    @classmethod
    def for_persona(cls, persona: Persona) -> PromptLeakGuard:
        name_words = set(content_words(persona.name))
        prompt = [s for s in split_sentences(persona.system_prompt)
                  if not name_words & set(content_words(s))]  # "You are Nova, ...": the bot may say who it is
        return cls(persona.style, prompt)

    def check(self, text: str) -> Leak | None:
        """A :class:`Leak` if ``text`` restates the instructions, else ``None``."""
        words = content_words(text)
        pairs = _pairs(words)
        shared = pairs & self._pairs
        strong = [p for p in shared if set(p) <= self._rule_words and set(p) & self._style_words]
        if shared and (len(shared) >= MIN_SHARED_PAIRS and len(shared) >= MIN_PAIR_SHARE * len(pairs)
                       or strong and len(strong) >= STRONG_PAIR_SHARE * len(pairs)
                       or len(words) <= 3 and len(pairs) == len(shared)):
            return Leak(f"restates the persona's instructions ({len(shared)} of {len(pairs)} word pairs)",
                        self._closest(shared))
        long_words = [w for w in words if len(w) >= LONG_WORD and not w.isdigit()]
        hits = [w for w in long_words if w in self._style_words]
        if len(hits) >= MIN_STYLE_WORDS and len(hits) >= MIN_STYLE_SHARE * len(long_words):
            return Leak(f"restates the persona's style rules ({', '.join(hits)})", self._closest_words(hits))
        return None

    def _closest(self, shared: set[tuple[str, str]]) -> str:
        return max(self._sentences, key=lambda s: len(_pairs(content_words(s)) & shared))

    def _closest_words(self, hits: list[str]) -> str:
        return max(self._sentences, key=lambda s: len(set(content_words(s)) & set(hits)))


def _pairs_of(sentences: list[str]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for s in sentences:
        out |= _pairs(content_words(s))
    return out
