"""API keys: read from the environment variable the config names, never stored in config or logs."""

from __future__ import annotations

import os

from bot.errors import VoicebotError


def api_key_from_env(env_name: str, base_url: str | None, *, missing: str) -> str:
    """The key in ``$env_name``. Without one, a local server (``base_url`` set) gets a placeholder — Ollama,
    llama.cpp and vLLM accept any key — and the hosted service is an error with the ``missing`` message."""
    key = os.environ.get(env_name, "")
    if key:
        return key
    if base_url is None:
        raise VoicebotError(missing)
    return "not-needed"
