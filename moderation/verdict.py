"""What a moderation check returns: a :class:`Verdict`, made of per-backend :class:`BackendResult`.

Both serialise to plain dicts (``to_dict()``) for the audit log and ``voicebot moderate --json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BackendResult", "Verdict", "ERROR_CATEGORY"]

ERROR_CATEGORY = "backend_error"
"""Category reported when a backend failed or timed out (the check then fails closed)."""


def _round_scores(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in sorted(scores.items())}


@dataclass
class BackendResult:
    """One backend's answer for one text.

    ``allowed`` is that backend's own decision under the stage thresholds; ``categories`` are the
    categories whose score reached their threshold; ``error`` is set when the backend failed or
    timed out (then ``allowed`` is False: fail-closed). ``details`` holds backend specifics, e.g. the
    lexicon rules that matched.
    """

    backend: str
    allowed: bool
    categories: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "allowed": self.allowed,
            "categories": list(self.categories),
            "scores": _round_scores(self.scores),
            "latency_ms": round(self.latency_ms, 3),
            "error": self.error,
            **({"details": self.details} if self.details else {}),
        }


StageAction = Literal["refuse", "warn", "allow"]
"""What a stage does with a blocked text (``moderation.<stage>.action``)."""
VerdictAction = Literal["allow", "refuse", "warn"]
"""A verdict's ``action``: ``allow`` when the text passed, else its stage's :data:`StageAction`."""


@dataclass
class Verdict:
    """The moderation decision for one text.

    * ``allowed``: the text passed moderation.
    * ``action``: what the stage does with it: ``"allow"`` when allowed, else the stage's configured
      action (``"refuse"``, ``"warn"`` or ``"allow"``, the last meaning "record only").
    * ``categories``: the categories that caused a block (empty when allowed).
    * ``scores``: highest score per category over all backends that answered.
    * ``backend``: the backend(s) the decision rests on: those that blocked, else all that ran.
    * ``reason``: one human-readable line; names a failed backend and says "failing closed".
    * ``latency_ms``: wall time of the whole check.
    * ``backends``: per-backend results as plain dicts (see :class:`BackendResult`).
    """

    allowed: bool
    action: VerdictAction
    categories: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    reason: str = ""
    latency_ms: float = 0.0
    backends: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return not self.allowed

    @property
    def undecided(self) -> bool:
        """Blocked because a backend failed or timed out (fail-closed), not because the text was judged:
        the same text checked again may well pass, so such a verdict must not be reused."""
        return ERROR_CATEGORY in self.categories

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (floats rounded for readability)."""
        return {
            "allowed": self.allowed,
            "action": self.action,
            "categories": list(self.categories),
            "scores": _round_scores(self.scores),
            "backend": self.backend,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "backends": [dict(b) for b in self.backends],
        }
