"""Folding text into a canonical form so that obfuscated abuse matches plain word lists.

``fold(text)`` turns what a person typed or an STT/LLM produced into a list of :class:`Token`
plus one normalised string (words separated by single spaces, no punctuation):

* Unicode NFKC, zero-width characters removed, case-folded, accents stripped, common
  Cyrillic/Greek look-alike letters mapped to Latin ("раssword" -> "password").
* Contractions and chat-speak expanded: "i'll" -> "i will", "don't" -> "do not",
  "u" -> "you", "ur" -> "your", "gonna" -> "going to", "imma" -> "i am going to".
* Leetspeak inside words: 0->o 1->i/l 3->e 4->a 5->s 7->t 9->g @->a $->s !->i |->i/l +->t
  ("sh1t", "b!tch", "@ss", "k1ll"). Tokens that are only digits are left alone ("2024").
* Runs of three or more single characters separated by spaces or punctuation are joined
  ("f u c k", "k.i.l.l", "f-u-c-k" -> one token).
* Letters repeated three or more times are squeezed ("fuuuuck" -> "fuck"/"fuuck").
* Masked letters ("f*ck", "sh**", "a**hole") keep a pattern that a matcher can resolve
  against its own word list (:attr:`Token.mask`).

A token can read several ways ("1" is "i" or "l"); every reading is kept in
:attr:`Token.forms`, and :attr:`Token.text` is the one a known vocabulary prefers.
Matching is then on whole tokens, which is what keeps "Scunthorpe" and "cocktail" clean.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import product

__all__ = ["Token", "Folded", "fold", "fold_phrase"]

_ZERO_WIDTH = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")

# Latin look-alikes from other scripts (lower case; text is case-folded first).
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ɑ": "a", "ɡ": "g", "ı": "i", "ℓ": "l",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u00b4": "'",
})

# Leetspeak: primary reading, and the alternative where one is common.
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "9": "g",
         "@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "¡": "i"}
_LEET_ALT = {"1": "l", "|": "l"}
_LEET_CHARS = "".join(_LEET)
_MASK_CHARS = "*#"

# What a token may contain; everything else separates tokens.
_TOKEN = re.compile(r"[\w'" + re.escape(_LEET_CHARS + _MASK_CHARS) + r"]+")
_HAS_LETTER = re.compile(r"[a-z]")
_RUN3 = re.compile(r"([a-z])\1{2,}")

_CONTRACTION_WORDS = {
    "won't": "will not", "can't": "can not", "shan't": "shall not", "ain't": "is not",
    "y'all": "you all", "ya'll": "you all", "let's": "let us", "i'ma": "i am going to",
    "ma'am": "madam", "o'clock": "oclock",
}
_CONTRACTION_SUFFIX = {"'ll": "will", "'re": "are", "'m": "am", "'ve": "have", "'d": "would"}
_IS_HOSTS = {"he", "she", "it", "that", "what", "who", "there", "here", "where", "how", "this",
             "everyone", "everybody", "nobody", "someone", "somebody", "nothing", "life"}

# Chat-speak and apostrophe-less contractions, applied to whole tokens after folding.
_CHAT = {
    "u": "you", "ur": "your", "r": "are", "yall": "you all", "im": "i am", "ima": "i am going to",
    "imma": "i am going to", "gonna": "going to", "gunna": "going to", "finna": "going to",
    "wanna": "want to", "wana": "want to", "gotta": "got to", "lemme": "let me", "gimme": "give me",
    "dont": "do not", "cant": "can not", "cannot": "can not", "wont": "will not", "didnt": "did not",
    "doesnt": "does not", "isnt": "is not", "arent": "are not", "wasnt": "was not",
    "werent": "were not", "shouldnt": "should not", "wouldnt": "would not", "couldnt": "could not",
    "havent": "have not", "hasnt": "has not", "youre": "you are", "youll": "you will",
    "theyre": "they are", "ppl": "people", "h8": "hate", "pls": "please", "plz": "please",
    "thx": "thanks", "k": "okay", "ok": "okay", "cuz": "because", "coz": "because",
}


@dataclass
class Token:
    """One word of folded text.

    ``forms``: every plausible reading (leet ambiguities, squeezed letter runs).
    ``text``: the reading used in :attr:`Folded.text`. ``raw``: the source characters.
    ``mask``: for masked words ("f*ck") a regex a matcher may resolve; else ``None``.
    ``joined``: the token was spelled out letter by letter ("f u c k").
    """

    text: str
    forms: tuple[str, ...]
    raw: str
    mask: re.Pattern[str] | None = None
    joined: bool = False


@dataclass
class Folded:
    """The result of :func:`fold`: tokens and their normalised text."""

    tokens: list[Token] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.tokens)


def _canonical_chars(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text).casefold().translate(_HOMOGLYPHS)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _split_raw(text: str) -> list[str]:
    """Raw tokens with edge punctuation trimmed ("fuck!!" -> "fuck", "'hi'" -> "hi")."""
    out = []
    for tok in _TOKEN.findall(text.replace("_", " ")):
        tok = tok.strip("'_")
        # "!" ends sentences: drop trailing ones unless the token is nothing but symbols.
        stripped = tok.rstrip("!")
        if stripped and _HAS_LETTER.search(stripped):
            tok = stripped
        tok = tok.lstrip("#")  # hashtags
        if tok and not all(c in "!|+'" for c in tok):
            out.append(tok)
    return out


def _join_spelled(raw: list[str]) -> list[tuple[str, bool]]:
    """Join runs of >= 3 one-character tokens: ["f","u","c","k"] -> [("fuck", True)]."""
    out: list[tuple[str, bool]] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) >= 3:
            out.append(("".join(run), True))
        else:
            out.extend((r, False) for r in run)
        run.clear()

    for tok in raw:
        if len(tok) == 1 and tok != "'":
            run.append(tok)
        else:
            flush()
            out.append((tok, False))
    flush()
    return out


def _expand_contraction(tok: str) -> list[str] | None:
    if "'" not in tok:
        return None
    if tok in _CONTRACTION_WORDS:
        return _CONTRACTION_WORDS[tok].split()
    if tok.endswith("n't"):
        return [tok[:-3], "not"]
    for suffix, word in _CONTRACTION_SUFFIX.items():
        if tok.endswith(suffix) and len(tok) > len(suffix):
            return [tok[: -len(suffix)], word]
    if tok.endswith("'s") and len(tok) > 2:
        host = tok[:-2]
        return [host, "is"] if host in _IS_HOSTS else [host]
    return [tok.replace("'", "")]


def _leet_readings(tok: str) -> list[str]:
    """All readings of ``tok`` under the leet map (at most 8)."""
    if not _HAS_LETTER.search(tok) and not any(c in tok for c in "@$!|"):
        return [tok]  # a number, not a word
    choices = []
    for ch in tok:
        if ch in _LEET:
            alt = _LEET_ALT.get(ch)
            choices.append((_LEET[ch], alt) if alt else (_LEET[ch],))
        else:
            choices.append((ch,))
    n_ambiguous = sum(1 for c in choices if len(c) > 1)
    if n_ambiguous > 3:  # too many combinations: primary and all-alternative readings only
        primary = "".join(c[0] for c in choices)
        alternative = "".join(c[-1] for c in choices)
        return [primary, alternative]
    return ["".join(p) for p in product(*choices)]


def _squeeze(word: str) -> list[str]:
    """Readings of a word with letter runs of >= 3 squeezed to 2 and to 1."""
    if not _RUN3.search(word):
        return [word]
    return [_RUN3.sub(r"\1\1", word), _RUN3.sub(r"\1", word)]


def _mask_pattern(tok: str) -> re.Pattern[str] | None:
    """A regex for a masked word: "f*ck" -> f[a-z]{1,2}ck. None if too little is visible."""
    if not any(c in tok for c in _MASK_CHARS) or tok[0] in _MASK_CHARS:
        return None
    visible = sum(1 for c in tok if c not in _MASK_CHARS)
    if visible < 1 or len(tok) < 3:
        return None
    parts = []
    for chunk in re.findall(r"[*#]+|[^*#]+", tok):
        if chunk[0] in _MASK_CHARS:
            parts.append(f"[a-z]{{1,{len(chunk) + 1}}}")
        else:
            parts.append(re.escape("".join(_LEET.get(c, c) for c in chunk)))
    return re.compile("".join(parts))


def _prefer(forms: list[str], vocabulary: Collection[str]) -> str:
    for form in forms:
        if form in vocabulary:
            return form
    return forms[0]


def _word_tokens(word: str, raw: str, joined: bool, vocabulary: Collection[str]) -> list[Token]:
    """Tokens for one word (after contraction expansion): leet, squeezing, masks, chat-speak."""
    mask = _mask_pattern(word)
    if mask is not None:
        shown = re.sub(r"[*#]+", "", "".join(_LEET.get(c, c) for c in word))
        return [Token(shown, (shown,), raw, mask=mask, joined=joined)]
    readings: list[str] = []
    for reading in _leet_readings(word.replace("*", "").replace("#", "")):
        for squeezed in _squeeze(reading):
            if squeezed and squeezed not in readings:
                readings.append(squeezed)
    if not readings:
        return []
    best = _prefer(readings, vocabulary)
    chat = _CHAT.get(best)
    if chat is not None and not joined:
        return [Token(w, (w,), raw) for w in chat.split()]
    return [Token(best, (best, *(r for r in readings if r != best)), raw, joined=joined)]


def fold(text: str, vocabulary: Collection[str] = ()) -> Folded:
    """Fold ``text`` (see the module docstring). ``vocabulary``: words whose readings win."""
    tokens: list[Token] = []
    for raw, joined in _join_spelled(_split_raw(_canonical_chars(text))):
        words = _expand_contraction(raw) or [raw]
        for word in words:
            if word:
                tokens.extend(_word_tokens(word, raw, joined, vocabulary))
    return Folded(tokens)


def fold_phrase(phrase: str) -> tuple[str, ...]:
    """The token texts of a lexicon or blocklist entry, folded like the text it is matched on."""
    return tuple(t.text for t in fold(phrase).tokens)
