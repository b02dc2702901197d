"""Running a stage's backends concurrently and combining their answers, fail-closed.

For each text every backend of the stage runs at once (``asyncio.gather``). Each backend's scores
are compared with the stage's per-category thresholds, giving that backend's own allow/block.
Then:

* ``combine = "any"`` (default): the text is blocked if any backend blocks.
* ``combine = "all"``: the text is blocked only if every backend blocks.

Fail-closed: a backend that raises, cannot load, or takes longer than ``moderation.timeout_ms``
counts as blocking, with category ``backend_error`` and a reason such as
``backend profanity failed: ImportError: ...; failing closed``. Under ``"any"`` that blocks the
text. Under ``"all"`` a failed backend is a blocking vote too: if another backend positively
allowed the text, the text is allowed (the failed backend could not have changed an "all" vote),
and the reason still names the failure. Any unexpected error in the moderator itself also yields a
blocking verdict. ``check()`` never raises (cancellation by the caller still propagates).

The persona decides about swearing aimed at no one: with ``profanity: allow`` the category
``profanity`` never blocks (its score is still reported); hate, threats and abuse still do.

One-time loading (importing a model) is not counted against ``timeout_ms``; it is bounded by
:data:`LOAD_TIMEOUT_S`. Call :meth:`StageModerator.warmup` at start-up to load models early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from moderation.base import Backend, Moderator
from moderation.config import StageConfig
from moderation.verdict import ERROR_CATEGORY, BackendResult, Verdict

__all__ = ["StageModerator", "DisabledModerator", "LOAD_TIMEOUT_S"]

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 120.0
"""Upper bound for a backend's one-time load (model import); past it the check fails closed."""


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StageModerator(Moderator):
    """Moderates with several backends under one :class:`StageConfig`."""

    def __init__(self, backends: Sequence[Backend], stage: StageConfig, timeout_ms: float,
                 name: str = "") -> None:
        self.backends = list(backends)
        self.stage = stage
        self.timeout_ms = float(timeout_ms)
        self.name = name or "+".join(b.name for b in self.backends) or "none"

    async def warmup(self) -> None:
        """Load every backend now; failures are logged and reported again by later checks."""
        for backend in self.backends:
            try:
                await asyncio.wait_for(asyncio.to_thread(backend.ensure_loaded), LOAD_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - reported, check() fails closed later
                log.warning("moderation backend %s could not load: %s", backend.name, _describe(exc))

    async def check(self, text: str, role: str = "user", persona: Any = None) -> Verdict:
        start = time.perf_counter()
        try:
            if not text or not text.strip():
                return Verdict(allowed=True, action="allow", backend=self.name,
                               reason="empty text", latency_ms=_ms(start))
            if not self.backends:
                return Verdict(allowed=True, action="allow", backend="none",
                               reason="no moderation backends configured for this stage",
                               latency_ms=_ms(start))
            results = await asyncio.gather(*(self._run(b, text, role, persona) for b in self.backends))
            return self._combine(results, start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed, never raise
            log.exception("moderation check failed")
            return Verdict(
                allowed=False, action=self.stage.action, categories=[ERROR_CATEGORY],
                backend=self.name, reason=f"moderator {self.name} failed: {_describe(exc)}; failing closed",
                latency_ms=_ms(start),
            )

    async def _run(self, backend: Backend, text: str, role: str, persona: Any) -> BackendResult:
        start = time.perf_counter()
        try:
            if not backend.loaded:
                await asyncio.wait_for(asyncio.to_thread(backend.ensure_loaded), LOAD_TIMEOUT_S)
            scored_from = time.perf_counter()
            result = await asyncio.wait_for(backend.score(text, role, persona), self.timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            waited = _ms(start)
            what = (f"timed out after {self.timeout_ms:g} ms" if backend.loaded
                    else f"did not load within {LOAD_TIMEOUT_S:g} s")
            return self._failed(backend, what, waited)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed
            return self._failed(backend, _describe(exc), _ms(start))
        scores = {str(k): float(v) for k, v in result.scores.items()}
        allows_profanity = getattr(persona, "profanity", "block") == "allow"
        flagged = sorted(c for c, s in scores.items()
                         if s >= self.stage.threshold(c) and not (allows_profanity and c == "profanity"))
        return BackendResult(backend=backend.name, allowed=not flagged, categories=flagged, scores=scores,
                             latency_ms=_ms(scored_from), details=result.details)

    def _failed(self, backend: Backend, what: str, latency_ms: float) -> BackendResult:
        log.warning("moderation backend %s failed: %s; failing closed", backend.name, what)
        return BackendResult(backend=backend.name, allowed=False, categories=[ERROR_CATEGORY],
                             latency_ms=latency_ms, error=what)

    def _combine(self, results: list[BackendResult], start: float) -> Verdict:
        blocking = [r for r in results if not r.allowed]
        if self.stage.combine == "all":
            allowed = len(blocking) < len(results)
        else:
            allowed = not blocking
        scores: dict[str, float] = {}
        for r in results:
            for cat, value in r.scores.items():
                scores[cat] = max(value, scores.get(cat, 0.0))
        failures = [f"backend {r.backend} failed: {r.error}; failing closed" for r in results if r.failed]
        flags = [self._flag_reason(r) for r in blocking if not r.failed]
        if allowed:
            names = "+".join(r.backend for r in results)
            if blocking:
                passing = "+".join(r.backend for r in results if r.allowed)
                reason = (f"allowed: combine=all and {passing} did not block"
                          f" (overruled: {'; '.join(failures + flags)})")
            else:
                reason = f"allowed by {names}: no category reached its threshold"
            return Verdict(allowed=True, action="allow", categories=[], scores=scores, backend=names,
                           reason=reason, latency_ms=_ms(start), backends=[r.to_dict() for r in results])
        categories: list[str] = []
        for r in blocking:
            categories.extend(c for c in r.categories if c not in categories)
        return Verdict(
            allowed=False, action=self.stage.action, categories=categories, scores=scores,
            backend="+".join(r.backend for r in blocking), reason="; ".join(failures + flags),
            latency_ms=_ms(start), backends=[r.to_dict() for r in results],
        )

    def _flag_reason(self, result: BackendResult) -> str:
        parts = []
        for cat in result.categories:
            part = f"{cat} {result.scores.get(cat, 0.0):.2f} >= {self.stage.threshold(cat):.2f}"
            evidence = [m.get("text") for m in result.details.get("matches", []) if m.get("category") == cat]
            if evidence:
                part += f" ({evidence[0]!r})"
            parts.append(part)
        return f"{result.backend} flagged " + ", ".join(parts)


class DisabledModerator(Moderator):
    """Stands in for a stage with ``enabled = false``: allows everything, says so."""

    name = "disabled"

    async def check(self, text: str, role: str = "user", persona: Any = None) -> Verdict:
        return Verdict(allowed=True, action="allow", backend="none",
                       reason="moderation is disabled for this stage")
