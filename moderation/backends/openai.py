"""``openai`` backend: OpenAI's moderation endpoint (``POST {base_url}/moderations``).

Uses the ``openai`` package (``AsyncOpenAI().moderations.create``) with ``moderation.openai_model``
(default ``omni-moderation-latest``). The API key is read from the environment variable named by
``moderation.openai_api_key_env`` when the backend loads; it is never logged or stored in results.
``moderation.openai_base_url`` points at any server speaking the same API. The client makes no
retries and times out with ``moderation.timeout_ms``, so an unreachable server fails closed fast.

OpenAI categories map onto voicebot's: harassment -> ``harassment``, harassment/threatening and
hate/threatening -> ``threat`` (the latter also ``hate``), hate -> ``hate``, illicit* -> ``illicit``,
self-harm* -> ``self_harm``, sexual -> ``sexual``, sexual/minors -> ``sexual_minors``,
violence* -> ``violence``. The endpoint's own ``flagged`` is kept in the details but the stage
thresholds decide, like for every backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from typing import Any

from moderation.base import Backend, BackendUnavailable, Scores

__all__ = ["OpenAIBackend", "OpenAIModerationError", "OPENAI_CATEGORIES"]

_KEYLIKE = re.compile(r"sk-[A-Za-z0-9_*\-]{4,}")


class OpenAIModerationError(RuntimeError):
    """The endpoint could not be reached or answered with an error (message has keys redacted)."""


def _redact(message: str, key: str | None) -> str:
    if key:
        message = message.replace(key, "***")
    return _KEYLIKE.sub("sk-***", message)

OPENAI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "harassment": ("harassment",),
    "harassment/threatening": ("threat", "harassment"),
    "hate": ("hate",),
    "hate/threatening": ("hate", "threat"),
    "illicit": ("illicit",),
    "illicit/violent": ("illicit", "violence"),
    "self-harm": ("self_harm",),
    "self-harm/intent": ("self_harm",),
    "self-harm/instructions": ("self_harm",),
    "sexual": ("sexual",),
    "sexual/minors": ("sexual_minors",),
    "violence": ("violence",),
    "violence/graphic": ("violence",),
}


class OpenAIBackend(Backend):
    """Calls the moderation endpoint; one ``AsyncOpenAI`` client per event loop."""

    name = "openai"

    def __init__(self, model: str = "omni-moderation-latest", api_key_env: str = "OPENAI_API_KEY",
                 base_url: str | None = None, timeout_ms: float = 500) -> None:
        super().__init__()
        self.model = model
        self.api_key_env = api_key_env
        self.base_url = base_url
        self.timeout_s = max(timeout_ms, 1.0) / 1000.0
        self._api_key: str | None = None
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _load(self) -> None:
        try:
            import openai  # noqa: F401 - checked here so the error is clear
        except ImportError as exc:
            raise BackendUnavailable(f"the openai package is not installed ({exc}): pip install openai") from None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise BackendUnavailable(
                f"openai moderation needs an API key in the environment variable {self.api_key_env} "
                "(name set by moderation.openai_api_key_env)")
        self._api_key = key

    def _client(self) -> Any:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                 timeout=self.timeout_s)
            self._clients[loop] = client
        return client

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        try:
            response = await self._client().moderations.create(model=self.model, input=text)
        except Exception as exc:  # noqa: BLE001 - re-raised without anything key-like
            where = self.base_url or "api.openai.com"
            detail = _redact(f"{type(exc).__name__}: {exc}", self._api_key)
            raise OpenAIModerationError(f"{detail} (server {where})") from None
        if not response.results:
            raise RuntimeError("moderation response has no results")
        result = response.results[0]
        raw = result.category_scores.model_dump(by_alias=True)
        scores: dict[str, float] = {}
        for label, value in raw.items():
            if value is None:
                continue
            for cat in OPENAI_CATEGORIES.get(label, ()):
                scores[cat] = max(float(value), scores.get(cat, 0.0))
        return Scores(scores, {"flagged": bool(result.flagged), "model": getattr(response, "model", self.model)})
