"""Secrets masking: the one place that decides what of a text or a record is a secret.

Used by everything that shows or stores data: ``config show`` and the audit header
(``Settings.public_dict``), the audit writer (every record), ``audit show`` / ``audit report``, error
lines and the console log. What is masked (replaced by ``***``):

* values under a dict key containing ``key``, ``token``, ``secret``, ``password`` (case-insensitive),
  except keys ending in ``_env`` (those hold the *name* of a variable) — numbers are kept
  (``"tokens": 42`` is a count);
* in any string: the password of a URL (``http://user:PW@host`` -> ``http://user:***@host``), values of
  secret-looking query parameters (``?api_key=...``, ``&token=...``, ``sig``, ``auth`` ...) and of
  ``Authorization`` / ``X-Api-Key``-style headers and ``Bearer`` tokens;
* anywhere in any string, the value of every environment variable named by a ``*_env`` config key
  (``llm.api_key_env``, ``discord.token_env``, ...), registered by :func:`watch_env` when settings load.

Free text is otherwise left alone: "my password is safe to mention" stays as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
SECRET_WORDS = ("key", "token", "secret", "password")
MIN_ENV_SECRET = 6
"""Environment values shorter than this are not masked as text (``1``, ``true`` would mask half a log)."""

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)(?P<pw>[^\s/@]+)(?P<at>@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth|credential)"
    r"[A-Za-z0-9_.-]*)=)(?P<value>[^&#\s'\"<>]+)", re.IGNORECASE)
_HEADER_SECRET = re.compile(
    r"(?P<head>\b(?:authorization|proxy-authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>(?:(?:bearer|basic|token)\s+)?[^\s,'\"]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)

_env_names: set[str] = set()


def is_secret_key(key: str) -> bool:
    """Whether a dict key names a secret (``api_key``, ``Authorization_Token``), not a variable name."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) and not lowered.endswith("_env")


def watch_env(names: Iterable[str]) -> None:
    """Mask the values of these environment variables wherever they appear (read when masking, so a key
    exported later is covered too)."""
    _env_names.update(n for n in names if isinstance(n, str) and n)


def env_names_in(config: Any) -> set[str]:
    """Every value of a ``*_env`` key in a config dict: the names of the variables holding secrets."""
    found: set[str] = set()
    if isinstance(config, dict):
        for k, v in config.items():
            if str(k).lower().endswith("_env") and isinstance(v, str) and v:
                found.add(v)
            else:
                found |= env_names_in(v)
    elif isinstance(config, list):
        for v in config:
            found |= env_names_in(v)
    return found


def _env_secrets() -> list[str]:
    values = {os.environ.get(name, "") for name in _env_names}
    return sorted((v for v in values if len(v) >= MIN_ENV_SECRET), key=len, reverse=True)


def redact_text(text: str) -> str:
    """``text`` with credentials in URLs, secret query parameters and headers, and watched env values masked."""
    if not text:
        return text
    for secret in _env_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["at"], text)
    text = _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)
    text = _HEADER_SECRET.sub(lambda m: m["head"] + MASK, text)
    return _BEARER.sub(lambda m: m["head"] + MASK, text)


def redact(value: Any, _secret: bool = False) -> Any:
    """A copy of JSON-plain ``value`` with secrets masked (keys as above, every string through
    :func:`redact_text`)."""
    if isinstance(value, dict):
        return {k: redact(v, is_secret_key(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, _secret) for v in value]
    if isinstance(value, str) and value:
        return MASK if _secret else redact_text(value)
    return value
