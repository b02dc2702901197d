"""Compiled word lists and regexes, matched against folded text (see :mod:`moderation.textnorm`).

A :class:`Lexicon` is built from the shipped ``lexicon.yaml`` (:func:`default_lexicon`) or from a
persona's ``blocklist`` / ``blocklist_regex`` (:meth:`Lexicon.from_blocklist`). Matching is on whole
folded tokens, never on substrings of words, with four kinds of rule:

* ``word``   one word plus its inflections (shit -> shits, shitty, shitting)
* ``exact``  one word as written (cock, not cocker)
* ``prefix`` any word starting with a root (fuck -> fuckwit)
* ``phrase`` a sequence of words, the last one inflected (treasure map -> treasure maps)
* ``pattern`` a regex over the folded text, for context ("i will kill you", not "kill the process")

Words spelled out letter by letter ("y o u c u n t") are also searched inside, since their word
boundaries were removed on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from moderation.textnorm import Folded, fold, fold_phrase

__all__ = ["Rule", "Match", "Lexicon", "default_lexicon", "LEXICON_PATH"]

LEXICON_PATH = Path(__file__).resolve().parent / "lexicon.yaml"

_SUFFIXES = (("iest", "y"), ("ier", "y"), ("ies", "y"), ("ers", ""), ("ing", ""), ("ing", "e"),
             ("ed", ""), ("ed", "e"), ("er", ""), ("es", ""), ("s", ""), ("y", ""))
_PREFIX_ENDINGS = ("", "s", "ed", "er", "ers", "ing", "in", "face", "head", "wit", "tard", "y")
_FOLD_CACHE_SIZE = 256
_MIN_SPELLED_SUBSTRING = 4  # shortest word searched inside a spelled-out run ("c u n t" yes, "a s s" no)


def stems(word: str) -> set[str]:
    """Candidate uninflected forms of ``word`` ("bitches" -> {"bitch", ...}). Stems are >= 3 letters."""
    out: set[str] = set()
    for suffix, add in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)] + add
            out.add(base)
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiou":
                out.add(base[:-1])  # shitty -> shitt -> shit
    return out


def inflections(word: str) -> set[str]:
    """Common inflected forms of ``word`` (used to resolve masked spellings such as "f***ing")."""
    out = {word}
    for suffix in ("s", "es", "ed", "ing", "er", "ers", "y"):
        out.add(word + suffix)
        if word[-1] not in "aeiouy":
            out.add(word + word[-1] + suffix)
    return out


@dataclass(frozen=True)
class Rule:
    """One lexicon entry: what it flags and how strongly."""

    category: str
    score: float
    kind: str
    source: str


@dataclass(frozen=True)
class Match:
    """A rule that fired, with the folded text it fired on."""

    category: str
    score: float
    kind: str
    rule: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "score": self.score, "kind": self.kind,
                "rule": self.rule, "text": self.text}


@dataclass
class Lexicon:
    """Compiled rules. Build with :meth:`from_data`, :meth:`from_yaml` or :meth:`from_blocklist`."""

    exact: dict[str, list[Rule]] = field(default_factory=dict)
    inflected: dict[str, list[Rule]] = field(default_factory=dict)
    prefixes: dict[str, list[tuple[str, Rule]]] = field(default_factory=dict)  # keyed by root[:3]
    phrases: dict[str, list[tuple[tuple[str, ...], Rule]]] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], Rule]] = field(default_factory=list)
    raw_patterns: list[tuple[re.Pattern[str], Rule]] = field(default_factory=list)
    allow: list[tuple[str, ...]] = field(default_factory=list)
    vocabulary: set[str] = field(default_factory=set)
    surface_forms: set[str] = field(default_factory=set)
    spelled: list[tuple[str, Rule]] = field(default_factory=list)
    _fold_cache: dict[str, Folded] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---- building -------------------------------------------------------------------------

    def add_term(self, term: str, rule: Rule, inflect: bool) -> None:
        """Add a word or phrase (folded like text). Multi-word terms become phrases."""
        words = fold_phrase(term)
        if not words:
            return
        self.vocabulary.update(words)
        compact = "".join(words)
        if len(words) == 1:
            word = words[0]
            target = self.inflected if inflect else self.exact
            target.setdefault(word, []).append(rule)
            self.surface_forms.update(inflections(word) if inflect else {word})
            if len(compact) >= _MIN_SPELLED_SUBSTRING:
                self.spelled.append((compact, rule))
        else:
            self.phrases.setdefault(words[0], []).append((words, rule))
            if len(compact) >= _MIN_SPELLED_SUBSTRING + 1:
                self.spelled.append((compact, rule))

    def add_prefix(self, root: str, rule: Rule) -> None:
        words = fold_phrase(root)
        if len(words) != 1 or len(words[0]) < 3:
            raise ValueError(f"lexicon prefix {root!r} must be one word of at least 3 letters")
        word = words[0]
        self.prefixes.setdefault(word[:3], []).append((word, rule))
        self.vocabulary.add(word)
        self.surface_forms.update(word + end for end in _PREFIX_ENDINGS)
        self.spelled.append((word, rule))

    def add_pattern(self, pattern: str, rule: Rule, raw_text_too: bool = False) -> None:
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid regex {pattern!r} ({rule.category}): {exc}") from None
        self.patterns.append((compiled, rule))
        if raw_text_too:
            self.raw_patterns.append((compiled, rule))
        self.vocabulary.update(re.findall(r"[a-z]{3,}", pattern.lower()))

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Lexicon:
        """Compile the structure of ``lexicon.yaml`` (see the comments at its top)."""
        lex = cls()
        defs: dict[str, str] = dict(data.get("defs") or {})
        for phrase in data.get("allow") or []:
            words = fold_phrase(phrase)
            if words:
                lex.allow.append(words)
        for category, groups in (data.get("categories") or {}).items():
            for group in groups or []:
                score = float(group.get("score", 1.0))
                unknown = set(group) - {"score", "words", "exact", "prefixes", "phrases", "patterns"}
                if unknown:
                    raise ValueError(f"lexicon category {category!r}: unknown keys {sorted(unknown)}")
                for term in group.get("words") or []:
                    lex.add_term(str(term), Rule(category, score, "word", str(term)), inflect=True)
                for term in group.get("exact") or []:
                    lex.add_term(str(term), Rule(category, score, "exact", str(term)), inflect=False)
                for root in group.get("prefixes") or []:
                    lex.add_prefix(str(root), Rule(category, score, "prefix", f"{root}*"))
                for term in group.get("phrases") or []:
                    lex.add_term(str(term), Rule(category, score, "phrase", str(term)), inflect=True)
                for pattern in group.get("patterns") or []:
                    expanded = _expand_defs(str(pattern), defs)
                    lex.add_pattern(expanded, Rule(category, score, "pattern", str(pattern)))
        return lex

    @classmethod
    def from_yaml(cls, path: str | Path) -> Lexicon:
        with open(path, encoding="utf-8") as fh:
            return cls.from_data(yaml.safe_load(fh) or {})

    @classmethod
    def from_blocklist(cls, terms: Iterable[str], regexes: Iterable[str],
                       category: str = "blocklist") -> Lexicon:
        """A lexicon for a persona: terms fold like text (inflected), regexes run case-insensitively
        on both the original text and the folded text (use ``(?-i:...)`` for case-sensitive parts)."""
        lex = cls()
        for term in terms:
            if term and term.strip():
                lex.add_term(term, Rule(category, 1.0, "blocklist", term), inflect=True)
        for pattern in regexes:
            if pattern:
                lex.add_pattern(pattern, Rule(category, 1.0, "blocklist_regex", pattern), raw_text_too=True)
        return lex

    # ---- matching -------------------------------------------------------------------------

    def fold(self, text: str, extra_vocabulary: Iterable[str] = ()) -> Folded:
        """Fold ``text`` preferring this lexicon's words. Results without extra vocabulary are
        cached (several backends fold the same text in one check); treat them as read-only."""
        if extra_vocabulary:
            return fold(text, self.vocabulary | set(extra_vocabulary))
        cached = self._fold_cache.get(text)
        if cached is None:
            if len(self._fold_cache) >= _FOLD_CACHE_SIZE:
                self._fold_cache.clear()
            cached = self._fold_cache[text] = fold(text, self.vocabulary)
        return cached

    def resolve(self, folded: Folded) -> tuple[list[set[str]], list[str], set[int]]:
        """Per token: all readings (masked words resolved against this lexicon), the preferred
        reading, and the positions covered by allow-listed expressions."""
        forms: list[set[str]] = []
        texts: list[str] = []
        for tok in folded.tokens:
            token_forms = set(tok.forms)
            text = tok.text
            if tok.mask is not None:
                resolved = sorted(w for w in self.surface_forms if tok.mask.fullmatch(w))
                if resolved:
                    token_forms.update(resolved)
                    text = resolved[0]
            forms.append(token_forms)
            texts.append(text)
        return forms, texts, self._allowed_positions(forms)

    def canonical_text(self, folded: Folded) -> str:
        """The folded text with masked words resolved and allow-listed expressions removed
        (what a context-blind classifier should see: "Moby Dick" -> "", "sh1t" -> "shit")."""
        _, texts, skipped = self.resolve(folded)
        return " ".join(t for i, t in enumerate(texts) if i not in skipped)

    def match(self, folded: Folded, raw_text: str = "") -> list[Match]:
        """All rules that fire on ``folded`` (and, for blocklist regexes, on ``raw_text``)."""
        tokens = folded.tokens
        forms, texts, skipped = self.resolve(folded)
        matches: list[Match] = []
        for i, token_forms in enumerate(forms):
            if i in skipped:
                continue
            matches.extend(self._match_word(token_forms, tokens[i].joined))
            matches.extend(self._match_phrases(i, forms, skipped))

        if self.patterns:
            text = " ".join("_" if i in skipped else t for i, t in enumerate(texts))
            for pattern, rule in self.patterns:
                found = pattern.search(text)
                if found:
                    matches.append(Match(rule.category, rule.score, rule.kind, rule.source, found.group(0)))
        if raw_text:
            for pattern, rule in self.raw_patterns:
                found = pattern.search(raw_text)
                if found and not any(m.rule == rule.source for m in matches):
                    matches.append(Match(rule.category, rule.score, rule.kind, rule.source, found.group(0)))
        return matches

    def _allowed_positions(self, forms: list[set[str]]) -> set[int]:
        skipped: set[int] = set()
        for words in self.allow:
            for i in range(len(forms) - len(words) + 1):
                if self._phrase_at(words, i, forms, set(), inflect=True):
                    skipped.update(range(i, i + len(words)))
        return skipped

    def _match_word(self, token_forms: set[str], joined: bool) -> list[Match]:
        out: list[Match] = []
        seen: set[Rule] = set()

        def hit(rule: Rule, text: str) -> None:
            if rule not in seen:
                seen.add(rule)
                out.append(Match(rule.category, rule.score, rule.kind, rule.source, text))

        for form in token_forms:
            for rule in self.exact.get(form, ()):
                hit(rule, form)
            for rule in self.inflected.get(form, ()):
                hit(rule, form)
            for stem in stems(form):
                for rule in self.inflected.get(stem, ()):
                    hit(rule, form)
            for root, rule in self.prefixes.get(form[:3], ()):
                if form.startswith(root):
                    hit(rule, form)
            if joined:
                for compact, rule in self.spelled:
                    if compact in form:
                        hit(rule, form)
        return out

    def _match_phrases(self, i: int, forms: list[set[str]], skipped: set[int]) -> list[Match]:
        out: list[Match] = []
        for form in forms[i]:
            for words, rule in self.phrases.get(form, ()):
                if self._phrase_at(words, i, forms, skipped, inflect=True):
                    out.append(Match(rule.category, rule.score, rule.kind, rule.source, " ".join(words)))
        return out

    @staticmethod
    def _phrase_at(words: tuple[str, ...], i: int, forms: list[set[str]], skipped: set[int],
                   inflect: bool) -> bool:
        if i + len(words) > len(forms):
            return False
        for k, word in enumerate(words):
            j = i + k
            if j in skipped:
                return False
            if word in forms[j]:
                continue
            last = k == len(words) - 1
            if last and inflect and any(word in stems(f) for f in forms[j]):
                continue
            return False
        return True


def _expand_defs(pattern: str, defs: Mapping[str, str]) -> str:
    """Replace ``%name%`` placeholders (recursively, at most 10 levels)."""
    for _ in range(10):
        expanded = re.sub(r"%(\w+)%", lambda m: _lookup(defs, m.group(1)), pattern)
        if expanded == pattern:
            return expanded
        pattern = expanded
    raise ValueError(f"lexicon defs nest too deeply in {pattern[:80]!r}")


def _lookup(defs: Mapping[str, str], name: str) -> str:
    if name not in defs:
        raise ValueError(f"lexicon pattern uses undefined %{name}%")
    return defs[name]


@lru_cache(maxsize=4)
def default_lexicon(path: str = str(LEXICON_PATH)) -> Lexicon:
    """The shipped lexicon (compiled once per process)."""
    return Lexicon.from_yaml(path)
