"""Defensive secret scrubbing applied to every record before it is written.

Voicebot never puts secrets into audit data on purpose (config names the *environment variable*
holding a key, e.g. ``llm.api_key_env``), but a log that must be shared with reviewers cannot rely
on that. Any dict key containing ``key``, ``token``, ``secret`` or ``password`` (case-insensitive),
except keys ending in ``_env``, has its non-empty string values replaced by ``"***"`` (strings in a
list under such a key too). Numbers are kept: ``"tokens": 42`` is a count, not a secret.
"""

from __future__ import annotations

from typing import Any

MASK = "***"
SECRET_WORDS = ("key", "token", "secret", "password")


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) and not lowered.endswith("_env")


def scrub(value: Any, _secret: bool = False) -> Any:
    """A copy of JSON-plain ``value`` with secret-looking values masked."""
    if isinstance(value, dict):
        return {k: scrub(v, is_secret_key(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, _secret) for v in value]
    if _secret and isinstance(value, str) and value:
        return MASK
    return value
