"""Where text is cut into sentences and clauses: the one splitter every part of voicebot uses.

Used for the reply pieces the cascade checks and speaks (:class:`~bot.processors.reply_chunks.ReplyChunks`),
the sentences a turn records (:func:`split_sentences` in :mod:`bot.turns`) and the transcript chunks realtime
hold-back checks (:class:`~bot.realtime.holdback.HoldBack`). Pure string rules, no model, no I/O.

**A sentence ends** after a run of ``.`` ``!`` ``?`` ``…`` (so ``?!`` and ``...`` are one end), optionally
followed by closing quotes or brackets, where whitespace follows. Not a sentence end:

* a decimal or a time (``3.5``, ``3:30``): no whitespace follows the point;
* an abbreviation: a title before a name (``Dr. Smith``, ``Mr.``, ``St.``), a dotted one (``e.g.``, ``U.S.``,
  ``a.m.``), a single initial (``J. Smith``) or a common one (``etc.``, ``vs.``, ``approx.``) followed by a word
  in lower case or a number;
* an ellipsis or a quoted ``!``/``?`` followed by a word in lower case (``Well... maybe.``,
  ``"Really?" she asked.``);
* the number of a list item at the start of a line (``1. First``).

**A clause ends** at a sentence end or after ``,`` ``;`` ``:`` ``–`` ``—`` or a spaced hyphen (`` - ``)
followed by whitespace (so ``1,000`` is one word). A clause of fewer than ``min_words`` words is kept with what
follows (``Sure, ...``).

**Streaming** (:class:`TextSplitter`): text arrives in pieces. A sentence end at the very end of what has
arrived is taken at once when nothing that may follow could change it (``Paris.``, ``Hi!``); when it could
(``Dr.``, ``3.``, ``...``, an unclosed quote) it waits for the next character. A run of punctuation is assumed
to arrive whole (LLM tokenizers keep ``...``, ``?!`` and ``."`` together). :meth:`TextSplitter.flush` returns
the rest at the end of the text.
"""

from __future__ import annotations

import re
from typing import Literal

Granularity = Literal["sentence", "clause"]
GRANULARITIES: tuple[Granularity, ...] = ("sentence", "clause")

SENTENCE_ENDS = ".!?\u2026"
CLAUSE_BREAKS = ",;:\u2013\u2014"
CLOSERS = "\"')]}\u201d\u2019\u00bb"
OPEN_QUOTES = "\u201c\u00ab"

TITLES = frozenset("mr mrs ms mx dr prof st sr jr mt gen capt lt sgt rev hon e.g i.e cf viz".split())
"""Abbreviations that stand before what they introduce: a point after them never ends a sentence."""
COMMON = frozenset(
    "etc vs approx ca al inc ltd co corp dept est no min max avg jan feb mar apr jun jul aug sep sept oct nov dec"
    .split())
"""Abbreviations that may also end a sentence: they do unless a word in lower case or a number follows."""

_END_RUN = re.compile(rf"[{re.escape(SENTENCE_ENDS)}]+[{re.escape(CLOSERS)}]*")
_CLAUSE_RUN = re.compile(rf"[{re.escape(CLAUSE_BREAKS)}][{re.escape(CLOSERS)}]*|(?<=\s)-(?=\s)")
_WORD_BEFORE = re.compile(r"[\w.]*$")
_LIST_NUMBER = re.compile(r"(?:^|\n)\s*\d{1,3}$")
_NON_SPACE = re.compile(r"\S")
_WORD = re.compile(r"\S+(?=\s)")
_UNDECIDED = -1


def _sentence_end(text: str, start: int, end: int, *, final: bool, eager: bool = True) -> int | None:
    """Does the punctuation run ``text[start:end]`` end a sentence? The cut offset if it does, ``None`` if not,
    :data:`_UNDECIDED` if that depends on text that has not arrived yet (only when not ``final``)."""
    at_end = end == len(text)
    if not at_end and not text[end].isspace():
        return None  # "3.5", "a.m", "?!x": no whitespace after the run
    if not text[:start].strip():
        return None  # nothing before it
    run = text[start:end].rstrip(CLOSERS)
    quoted = end > start + len(run)
    nxt: str | None  # the first character of what follows; "" at the end of the text; None: not arrived yet
    if at_end:
        nxt = "" if final else None
    else:
        m = _NON_SPACE.search(text, end)
        nxt = text[m.start()] if m else ("" if final else None)
    continues = bool(nxt) and (nxt.islower() or nxt.isdigit())  # type: ignore[union-attr]
    if run == ".":
        word = _WORD_BEFORE.search(text, 0, start).group(0)
        bare = word.strip(".").lower()
        if _LIST_NUMBER.search(text, 0, start) or bare in TITLES:
            return None  # "1. First", "Dr. Smith", "e.g. Paris"
        initial = len(bare) == 1 and word.strip(".").isupper()
        if initial or bare in COMMON or "." in bare or bare.isdigit():
            # "J. Smith", "etc. and", "U.S. is", "3." (-> 3.5): depends on what follows
            if nxt is None:
                return _UNDECIDED
            if continues or (initial and nxt.isupper()):
                return None
    elif run.endswith(("...", "\u2026")) or (quoted and run[-1] in "!?"):
        # "Well... maybe", "'Really?' she asked": a lower-case word after it continues the sentence
        if nxt is None:
            return _UNDECIDED
        if continues:
            return None
    if nxt is None and (not eager or _open_quote(text[:end])):
        return _UNDECIDED  # its closing quote may be in the next piece (or: wait for the next piece anyway)
    return end


def _open_quote(text: str) -> bool:
    closed = text.count("\u201d") + text.count("\u00bb")
    return text.count('"') % 2 == 1 or sum(text.count(q) for q in OPEN_QUOTES) > closed


def _cuts(text: str, granularity: Granularity, final: bool, eager: bool = True) -> list[tuple[int, bool]]:
    """(offset, is a sentence end) of every place ``text`` may be cut, in order."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}: use sentence or clause")
    cuts: dict[int, bool] = {}
    for m in _END_RUN.finditer(text):
        cut = _sentence_end(text, m.start(), m.end(), final=final, eager=eager)
        if cut is not None and cut != _UNDECIDED:
            cuts[cut] = True
    if granularity == "clause":
        for m in _CLAUSE_RUN.finditer(text):
            if m.end() < len(text) and text[m.end()].isspace() and text[:m.start()].strip():
                cuts.setdefault(m.end(), False)
    return sorted(cuts.items())


def boundaries(text: str, granularity: Granularity = "sentence") -> list[int]:
    """Offsets (after the punctuation) where the complete ``text`` is cut into sentences or clauses."""
    return [cut for cut, _ in _cuts(text, granularity, final=True)]


def split(text: str, granularity: Granularity = "sentence", *, min_words: int = 1) -> list[str]:
    """``text`` cut into sentences (or clauses), stripped; a clause shorter than ``min_words`` joins the next."""
    splitter = TextSplitter(granularity, min_words=min_words)
    pieces = splitter.feed(text)
    rest = splitter.flush()
    return pieces + ([rest] if rest else [])


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences, stripped."""
    return split(text, "sentence")


class TextSplitter:
    """Streaming splitter: :meth:`feed` text as it arrives, get back the pieces it completed.

    ``granularity``: what ends a piece. ``first``: what ends the first piece after construction or
    :meth:`reset` (a reply's first piece may end at a clause so it is heard sooner; default: ``granularity``).
    ``min_words``: a clause break cuts only a piece of at least this many words (sentence ends always cut).
    ``max_words``: cut after that many complete words even without punctuation (0: never).
    ``eager``: a sentence end at the end of what has arrived cuts at once where nothing that may follow could
    change it (realtime hold-back: audio waits for its text); otherwise it waits for the next character.
    """

    def __init__(self, granularity: Granularity = "sentence", *, first: Granularity | None = None,
                 min_words: int = 1, max_words: int = 0, eager: bool = True) -> None:
        for g in (granularity, first or granularity):
            if g not in GRANULARITIES:
                raise ValueError(f"unknown granularity {g!r}: use sentence or clause")
        self.granularity: Granularity = granularity
        self.first: Granularity = first or granularity
        self.min_words = min_words
        self.max_words = max_words
        self.eager = eager
        self._buf = ""
        self._cut_any = False

    @property
    def pending(self) -> str:
        """Text received that is not yet part of a complete piece."""
        return self._buf

    def feed(self, text: str) -> list[str]:
        """Add text; return the pieces it completed (stripped, in order)."""
        self._buf += text
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
                self._cut_any = True
        return out

    def flush(self) -> str | None:
        """The text is complete: whatever is left is the last piece. The next text starts afresh."""
        rest = self._buf.strip()
        self.reset()
        return rest or None

    def reset(self) -> None:
        """Forget what is pending (an interruption, or a new reply)."""
        self._buf = ""
        self._cut_any = False

    def _next_cut(self) -> int | None:
        buf = self._buf
        granularity = self.granularity if self._cut_any else self.first
        cut = next((c for c, sentence in _cuts(buf, granularity, final=False, eager=self.eager)
                    if sentence or len(buf[:c].split()) >= self.min_words), None)
        if self.max_words:
            words = _WORD.findall(buf, 0, cut if cut is not None else len(buf))
            if len(words) >= self.max_words:
                cut = [m.end() for m in _WORD.finditer(buf)][self.max_words - 1]
        return cut
