"""Moderation backends. Each module holds one; :func:`make_backend` builds one by config name.

Backends are imported lazily so that an optional dependency (detoxify, openai) is only needed
when its backend is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moderation.base import Backend
    from moderation.config import ModerationConfig

__all__ = ["make_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("classifier", "blocklist", "guard", "profanity", "keywords", "detoxify", "openai")


def make_backend(name: str, config: ModerationConfig) -> Backend:
    """A new backend instance for ``name``. Cheap: nothing heavy is imported or loaded here."""
    if name == "classifier":
        from moderation.backends.classifier import ClassifierBackend
        return ClassifierBackend()
    if name == "blocklist":
        from moderation.backends.keywords import BlocklistBackend
        return BlocklistBackend()
    if name == "guard":
        from moderation.backends.guard import GuardBackend, GuardFormat
        return GuardBackend(model=config.guard_model, base_url=config.guard_base_url,
                            fmt=GuardFormat(config.guard_format), api_key_env=config.guard_api_key_env,
                            timeout_ms=config.timeout_ms)
    if name == "profanity":
        from moderation.backends.profanity import ProfanityBackend
        return ProfanityBackend()
    if name == "keywords":
        from moderation.backends.keywords import KeywordsBackend
        return KeywordsBackend()
    if name == "detoxify":
        from moderation.backends.detoxify import DetoxifyBackend
        return DetoxifyBackend(checkpoint=config.detoxify_checkpoint)
    if name == "openai":
        from moderation.backends.openai import OpenAIBackend
        return OpenAIBackend(model=config.openai_model, api_key_env=config.openai_api_key_env,
                             base_url=config.openai_base_url, timeout_ms=config.timeout_ms)
    raise ValueError(f"unknown moderation backend {name!r}: choose from {', '.join(BACKEND_NAMES)}")
