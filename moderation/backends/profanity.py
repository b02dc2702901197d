"""``profanity`` backend: the linear SVM shipped inside alt-profanity-check.

alt-profanity-check (``from profanity_check import predict_prob``) is a TF-IDF vectoriser plus an
ensemble of calibrated linear SVMs, trained on offensive/abusive comments. Its score is reported as
category ``profanity``. It is good at swearing and direct insults, weak at threats and self-harm
phrased without swear words, and it also scores mild swearing ("damn", "crap") high.

Calling ``predict_prob`` costs about 3 ms per sentence, almost all of it scikit-learn per-call
overhead. On load this backend reads the same fitted model and scores with a pure-Python copy of
its arithmetic (analyzer -> tf-idf -> l2 norm -> decision functions -> sigmoid calibration ->
mean), which takes tens of microseconds. The copy is checked against ``predict_prob`` on a few
sentences at load; if the model's structure is not the one expected or the numbers differ,
the backend falls back to ``predict_prob`` itself.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moderation.base import Backend, BackendUnavailable, Scores
from moderation.lexicon import default_lexicon

__all__ = ["ProfanityBackend", "load_scorer"]

_SELF_TEST = ("you are a complete idiot", "have a lovely day", "what the hell is this", "", "kill the process")
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class _FastScorer:
    """Pure-Python evaluation of the fitted profanity_check model (same numbers, no sklearn calls)."""

    analyze: Callable[[str], list[str]]
    weights: dict[str, tuple[float, tuple[float, ...]]]  # term -> (idf, coef per SVM)
    intercepts: tuple[float, ...]
    calibration: tuple[tuple[float, float], ...]  # (a, b) per SVM: p = 1 / (1 + exp(a * d + b))

    def __call__(self, text: str) -> float:
        counts = Counter(t for t in self.analyze(text) if t in self.weights)
        decision = list(self.intercepts)
        if counts:
            values = {t: c * self.weights[t][0] for t, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in values.values()))
            for term, value in values.items():
                coefs = self.weights[term][1]
                for k in range(len(decision)):
                    decision[k] += value / norm * coefs[k]
        total = 0.0
        for d, (a, b) in zip(decision, self.calibration):
            z = a * d + b
            total += 1.0 / (1.0 + math.exp(z)) if z < 700 else 0.0
        return total / len(decision)


def _build_fast(vectorizer: Any, model: Any) -> _FastScorer | None:
    """The fast scorer, or None if the fitted objects are not the expected shape."""
    try:
        params = vectorizer.get_params()
        if (type(vectorizer).__name__ != "TfidfVectorizer" or params.get("analyzer") != "word"
                or tuple(params.get("ngram_range", ())) != (1, 1) or params.get("norm") != "l2"
                or not params.get("use_idf") or params.get("sublinear_tf") or params.get("binary")):
            return None
        if type(model).__name__ != "CalibratedClassifierCV" or model.method != "sigmoid":
            return None
        if list(model.classes_) != [0, 1]:
            return None
        coefs, intercepts, calibration = [], [], []
        for cc in model.calibrated_classifiers_:
            est = cc.estimator
            if len(cc.calibrators) != 1 or est.coef_.shape[0] != 1 or list(est.classes_) != [0, 1]:
                return None
            coefs.append(est.coef_[0])
            intercepts.append(float(est.intercept_[0]))
            calibration.append((float(cc.calibrators[0].a_), float(cc.calibrators[0].b_)))
        idf = vectorizer.idf_
        weights = {term: (float(idf[i]), tuple(float(c[i]) for c in coefs))
                   for term, i in vectorizer.vocabulary_.items()}
        return _FastScorer(vectorizer.build_analyzer(), weights, tuple(intercepts), tuple(calibration))
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def load_scorer() -> tuple[Callable[[str], float], bool]:
    """``(score_fn, fast)``: a text -> probability function; ``fast`` says if it is the fast copy."""
    try:
        from profanity_check import predict_prob
        from profanity_check import profanity_check as pc
    except ImportError as exc:
        raise BackendUnavailable(
            f"alt-profanity-check is not installed ({exc}): pip install alt-profanity-check"
        ) from None

    def slow(text: str) -> float:
        return float(predict_prob([text])[0])

    fast = _build_fast(getattr(pc, "vectorizer", None), getattr(pc, "model", None))
    if fast is not None and all(abs(fast(t) - slow(t)) <= _TOLERANCE for t in _SELF_TEST):
        return fast, True
    return slow, False


_SCORER: list[tuple[Callable[[str], float], bool]] = []
_SCORER_LOCK = threading.Lock()


class ProfanityBackend(Backend):
    """Scores category ``profanity`` with alt-profanity-check's model (shared by all instances)."""

    name = "profanity"

    def _load(self) -> None:
        default_lexicon()  # folding needs its vocabulary and allow-list
        with _SCORER_LOCK:
            if not _SCORER:
                _SCORER.append(load_scorer())

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        scorer, fast = _SCORER[0]
        lexicon = default_lexicon()
        model_text = lexicon.canonical_text(lexicon.fold(text))
        return Scores({"profanity": scorer(model_text)}, {"fast_path": fast})
