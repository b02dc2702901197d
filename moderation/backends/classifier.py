"""``classifier`` backend (the default): a sentence embedding and a trained classifier head.

1. The text is read twice when it is obfuscated: as written, and normalised by
   :mod:`moderation.textnorm` (leetspeak ``k1ll`` -> ``kill``, spelled-out ``k i l l``, masked
   ``f*ck``, squeezed ``fuuuck``) with joined-up words split on the tokenizer's vocabulary
   (``killallgays`` -> ``kill all gays``). Plain text is read once.
2. Each reading is embedded by all-MiniLM-L6-v2 (:mod:`moderation.embedder`, shared per process).
3. A head (``classifier_head.npz``: an ensemble of 5 one-hidden-layer networks, 384 -> 64 -> 9 classes,
   trained by ``scripts/train_moderation_classifier.py`` on ``tests/data/moderation_train*.tsv``, the
   red-team dev set and templated sentences) gives class probabilities. The reading with the higher "undesired"
   probability counts.
4. The encoder reads at most 128 tokens. A text longer than :data:`LONG_TEXT_WORDS` words is also read
   sentence by sentence, and a sentence that long in overlapping windows of :data:`WINDOW_WORDS` words:
   the most undesired piece counts, so nothing said after the first 128 tokens goes unchecked.

Scores (categories of ``moderation.config.CATEGORIES``):

* ``toxicity`` = P(any undesired class) = 1 - P(none) - P(profanity): the main decision;
* ``hate``, ``threat``, ``harassment``, ``violence``, ``sexual``, ``sexual_minors``, ``self_harm``:
  each class's own probability (for per-category thresholds and explanations);
* ``profanity``: swearing aimed at no one. Whether that blocks is the persona's choice
  (``profanity: block|allow``, see :mod:`moderation.combined`).

Details list the class probabilities and the reading that decided, for ``voicebot moderate --explain``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.text_split import split_sentences
from moderation.base import Backend, BackendUnavailable, Scores
from moderation.embedder import SentenceEncoder, shared_encoder
from moderation.lexicon import default_lexicon

__all__ = ["ClassifierBackend", "ClassifierHead", "HEAD_PATH", "prepare_readings", "UNSAFE_CLASSES"]

LONG_TEXT_WORDS = 48
"""A text longer than this many words is also read in pieces: one sentence stays well inside the encoder's
128 tokens, and the mean of its token vectors is not diluted by everything around it."""
WINDOW_WORDS = 24
"""A sentence longer than :data:`LONG_TEXT_WORDS` (unpunctuated speech) is read in windows of this many words,
overlapping by half."""

HEAD_PATH = Path(__file__).resolve().parent.parent / "classifier_head.npz"

UNSAFE_CLASSES = ("hate", "threat", "harassment", "violence", "sexual", "sexual_minors", "self_harm")
"""Classes whose probability adds up to ``toxicity``. The other two are ``none`` and ``profanity``."""

_SPLIT_MIN_LEN = 8
_LEET_OR_MASK = set("0134579@$!|+*#")


@dataclass(frozen=True)
class ClassifierHead:
    """A small ensemble of one-hidden-layer networks on sentence vectors, with a calibrated ``none`` shift.

    Member ``k``: ``p_k = softmax(relu(v @ w1[k] + b1[k]) @ w2[k] + b2[k])``; the head's probabilities
    are the members' mean, then ``P(none)`` is multiplied by ``exp(none_shift)`` and the vector
    renormalised (the shift was chosen on the dev set so that the stage's 0.5 thresholds sit at the
    chosen operating point). Trained by ``scripts/train_moderation_classifier.py``.
    """

    classes: tuple[str, ...]
    w1: Any  # numpy (members, dim, hidden)
    b1: Any  # numpy (members, hidden)
    w2: Any  # numpy (members, hidden, n_classes)
    b2: Any  # numpy (members, n_classes)
    none_shift: float
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path | None = None) -> ClassifierHead:
        import numpy as np

        path = HEAD_PATH if path is None else path
        if not path.is_file():
            raise BackendUnavailable(
                f"classifier head {path} is missing: reinstall voicebot or run "
                "scripts/train_moderation_classifier.py")
        with np.load(path, allow_pickle=False) as data:
            if "w1" not in data.files:
                raise BackendUnavailable(f"classifier head {path} is of an older format: run "
                                         "scripts/train_moderation_classifier.py")
            classes = tuple(str(c) for c in data["classes"])
            head = cls(classes, *(data[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")),
                       float(data["none_shift"]), json.loads(str(data["meta"])))
        members, dim, hidden = head.w1.shape
        if ("none" not in classes or dim != SentenceEncoder.dimension or head.b1.shape != (members, hidden)
                or head.w2.shape != (members, hidden, len(classes)) or head.b2.shape != (members, len(classes))):
            raise BackendUnavailable(f"classifier head {path} does not fit the encoder (shape {head.w1.shape})")
        return head

    def probabilities(self, vector: Any) -> dict[str, float]:
        import numpy as np

        hidden = np.maximum(np.einsum("d,mdh->mh", vector, self.w1) + self.b1, 0.0)
        logits = np.einsum("mh,mhc->mc", hidden, self.w2) + self.b2
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = (exp / exp.sum(axis=1, keepdims=True)).mean(axis=0)
        probs[self.classes.index("none")] *= np.exp(self.none_shift)
        probs = probs / probs.sum()
        return {c: float(p) for c, p in zip(self.classes, probs)}


def _segment(word: str, words: frozenset[str]) -> list[str] | None:
    """Split a joined-up word into the fewest vocabulary words ("killallgays" -> kill all gays)."""
    n = len(word)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for end in range(1, n + 1):
        for start in range(max(0, end - 20), end):
            prev = best[start]
            piece = word[start:end]
            if prev is None or not (piece in words or (piece.endswith("s") and piece[:-1] in words)):
                continue
            if best[end] is None or len(prev) + 1 < len(best[end]):  # type: ignore[arg-type]
                best[end] = prev + [piece]
    result = best[n]
    return result if result is not None and len(result) > 1 else None


def prepare_readings(text: str, words: frozenset[str]) -> list[str]:
    """The text as written, plus its normalised reading when that differs by more than case."""
    lexicon = default_lexicon()
    folded = lexicon.fold(text)
    changed = False
    out: list[str] = []
    for token in folded.tokens:
        raw = token.raw.casefold()
        if token.joined or token.mask is not None or (_LEET_OR_MASK & set(raw) and token.text != raw):
            changed = True
        if len(token.text) >= _SPLIT_MIN_LEN and token.text not in words:
            pieces = _segment(token.text, words)
            if pieces:
                out.extend(pieces)
                changed = True
                continue
        out.append(token.text)
    readings = [text]
    if changed and out:
        readings.append(" ".join(out))
    return readings


_HEAD: list[ClassifierHead] = []
_WORDS: list[frozenset[str]] = []
_LOCK = threading.Lock()


def pieces(text: str, long: int = LONG_TEXT_WORDS, window: int = WINDOW_WORDS) -> list[str]:
    """What is read of ``text``: the text itself, and when it is longer than ``long`` words, each sentence
    too, a sentence that long in windows of ``window`` words overlapping by half."""
    if len(text.split()) <= long:
        return [text]
    out = [text]
    step = max(1, window // 2)
    for sentence in split_sentences(text):
        words = sentence.split()
        if len(words) <= long:
            out.append(sentence)
            continue
        out.extend(" ".join(words[i:i + window]) for i in range(0, len(words) - step, step))
    return out


def _scores(text: str) -> tuple[tuple[tuple[str, float], ...], str]:
    encoder, head, words = shared_encoder(), _HEAD[0], _WORDS[0]
    best: dict[str, float] | None = None
    best_reading = text
    for reading in (r for piece in pieces(text) for r in prepare_readings(piece, words)):
        probs = head.probabilities(encoder.encode(reading))
        if best is None or 1 - probs["none"] - probs.get("profanity", 0) > 1 - best["none"] - best.get("profanity", 0):
            best, best_reading = probs, reading
    assert best is not None
    return tuple(sorted(best.items())), best_reading


class ClassifierBackend(Backend):
    """Embedding + classifier head; model and head are loaded once per process."""

    name = "classifier"

    def _load(self) -> None:
        with _LOCK:
            encoder = shared_encoder()
            if not _HEAD:
                _HEAD.append(ClassifierHead.load())
            if not _WORDS:
                _WORDS.append(encoder.word_vocabulary())
        default_lexicon()  # the folding tables
        _scores("hello")  # first run of the ONNX graph happens here, not in a turn

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        # A few ms of CPU in onnxruntime (which releases the GIL): off the event loop, so audio keeps flowing
        # and the stage timeout can fire.
        probs_items, reading = await asyncio.to_thread(_scores, text)
        probs = dict(probs_items)
        scores = {c: p for c, p in probs.items() if c in UNSAFE_CLASSES or c == "profanity"}
        scores["toxicity"] = max(0.0, 1.0 - probs.get("none", 0.0) - probs.get("profanity", 0.0))
        details: dict[str, Any] = {"probabilities": {c: round(p, 4) for c, p in probs.items()}}
        if reading != text:
            details["reading"] = reading
        return Scores(scores, details)
