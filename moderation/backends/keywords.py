"""``keywords`` backend: the shipped lexicon plus the persona's blocklist.

* The lexicon (``moderation/lexicon.yaml``) scores profanity, insult, hate, harassment, threat,
  violence, sexual, sexual_minors and self_harm with words, phrases and context regexes.
* ``persona.blocklist`` terms and ``persona.blocklist_regex`` regexes score category
  ``blocklist`` at 1.0. Terms are folded like the text (case-insensitive, leetspeak, spacing,
  inflections: "treasure map" also blocks "Tre@sure M4ps"); regexes are case-insensitive and
  run on the original text and on the folded text (``(?-i:...)`` makes part case-sensitive).

Details in the result list every rule that matched (category, score, rule, matched text).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from moderation.base import Backend, Scores
from moderation.lexicon import Lexicon, default_lexicon

__all__ = ["BlocklistBackend", "KeywordsBackend", "persona_lexicon"]

_PERSONA_CACHE: OrderedDict[tuple[tuple[str, ...], tuple[str, ...]], Lexicon] = OrderedDict()
_PERSONA_CACHE_SIZE = 32


def persona_lexicon(persona: Any) -> Lexicon | None:
    """The compiled blocklist of ``persona`` (cached), or None if it has none.

    Raises ValueError naming the persona when one of its regexes does not compile."""
    if persona is None:
        return None
    terms = tuple(str(t) for t in (getattr(persona, "blocklist", None) or ()))
    regexes = tuple(str(r) for r in (getattr(persona, "blocklist_regex", None) or ()))
    if not terms and not regexes:
        return None
    key = (terms, regexes)
    lex = _PERSONA_CACHE.get(key)
    if lex is None:
        try:
            lex = Lexicon.from_blocklist(terms, regexes)
        except ValueError as exc:
            name = getattr(persona, "name", "?")
            raise ValueError(f"persona {name!r} blocklist_regex: {exc}") from None
        _PERSONA_CACHE[key] = lex
        while len(_PERSONA_CACHE) > _PERSONA_CACHE_SIZE:
            _PERSONA_CACHE.popitem(last=False)
    else:
        _PERSONA_CACHE.move_to_end(key)
    return lex


class KeywordsBackend(Backend):
    """Lexicon and persona blocklist matching on folded text."""

    name = "keywords"
    persona_only = False

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        super().__init__()
        self._lexicon = lexicon

    def _load(self) -> None:
        if self._lexicon is None:
            self._lexicon = default_lexicon()

    @property
    def lexicon(self) -> Lexicon:
        self.ensure_loaded()
        assert self._lexicon is not None
        return self._lexicon

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        return self.score_sync(text, persona)

    def score_sync(self, text: str, persona: Any = None) -> Scores:
        """The same as :meth:`score`, for callers without an event loop."""
        lexicon = self.lexicon
        blocklist = persona_lexicon(persona)
        if blocklist is None:
            if self.persona_only:
                return Scores({}, {})
            folded = lexicon.fold(text)
            matches = lexicon.match(folded)
        else:
            folded = lexicon.fold(text, blocklist.vocabulary)
            matches = [] if self.persona_only else lexicon.match(folded)
            matches += blocklist.match(folded, raw_text=text)
        scores: dict[str, float] = {}
        for m in matches:
            scores[m.category] = max(m.score, scores.get(m.category, 0.0))
        details: dict[str, Any] = {"folded": folded.text}
        if matches:
            best = sorted(matches, key=lambda m: -m.score)
            details["matches"] = [m.to_dict() for m in best[:10]]
        return Scores(scores, details)


class BlocklistBackend(KeywordsBackend):
    """Only the persona's blocklist (config name ``blocklist``, part of the default stack). The shipped
    lexicon folds the text (leetspeak, spacing) but does not decide anything here."""

    name = "blocklist"
    persona_only = True
