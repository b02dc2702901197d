"""The two interfaces of the moderation layer.

* :class:`Moderator` is what the rest of voicebot uses: ``await moderator.check(text, role, persona)``
  returns a :class:`~moderation.verdict.Verdict` and never raises (fail-closed).
* :class:`Backend` is one scorer (profanity model, keyword lexicon, Detoxify, OpenAI). It returns
  raw per-category scores in 0..1; thresholds and combination are applied by the moderator
  (:mod:`moderation.combined`), so every backend is judged by the same config.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from moderation.verdict import Verdict

__all__ = ["Backend", "BackendUnavailable", "Moderator", "Scores"]


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (package missing, no checkpoint, no API key). The message says
    what to do; the moderator reports it in the verdict's reason and fails closed."""


@dataclass
class Scores:
    """A backend's answer: ``scores`` per canonical category (see ``moderation.config.CATEGORIES``)
    and optional ``details`` for the audit log (matched rules, raw model labels, ...)."""

    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One moderation scorer.

    Subclasses set :attr:`name`, implement :meth:`score` and, when they need heavy one-time setup
    (importing a model, building a client), :meth:`_load`. :meth:`ensure_loaded` runs ``_load`` once,
    thread-safely; the moderator calls it in a worker thread, outside the per-check timeout.
    """

    name: ClassVar[str] = "backend"

    RETRY_LOAD_AFTER_S: ClassVar[float] = 30.0
    """After a failed load, the same error is reported for this long before loading is retried
    (so a broken setup does not re-read a model on every turn)."""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False
        self._load_error: tuple[float, Exception] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure_loaded(self) -> None:
        """Do the one-time setup if not done yet. Raises :class:`BackendUnavailable` (or anything
        else) when the backend cannot work; a call after :attr:`RETRY_LOAD_AFTER_S` tries again."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            if self._load_error is not None:
                failed_at, error = self._load_error
                if time.monotonic() - failed_at < self.RETRY_LOAD_AFTER_S:
                    raise error
            try:
                self._load()
            except Exception as exc:
                self._load_error = (time.monotonic(), exc)
                raise
            self._load_error = None
            self._loaded = True

    def _load(self) -> None:  # noqa: B027 - optional hook
        """One-time setup; the default has none."""

    @abstractmethod
    async def score(self, text: str, role: str, persona: Any) -> Scores:
        """Score ``text`` (said by ``role``: "user" or "bot") for ``persona`` (may be None)."""


class Moderator(ABC):
    """Checks text for one stage. ``check`` never raises: on any failure it blocks (fail-closed)."""

    name: str = "moderator"

    @abstractmethod
    async def check(self, text: str, role: str = "user", persona: Any = None) -> Verdict:
        """Moderate ``text`` said by ``role`` ("user" or "bot") for ``persona``."""

    async def warmup(self) -> None:
        """Load models ahead of the first check (optional; a first check loads them otherwise)."""
