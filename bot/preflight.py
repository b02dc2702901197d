"""Checks made before a session starts, so a bad setup fails in one clear line instead of mid-turn."""

from __future__ import annotations

import openai

from bot.config import LLMConfig, Settings
from bot.errors import VoicebotError
from bot.services.llm import resolve_api_key


def check_llm_server(settings: Settings, timeout: float = 3.0) -> None:
    """For ``llm.provider = "openai"``: the server answers and accepts the key."""
    if settings.mode != "pipeline":
        return  # the [llm] section is only used by the cascade; other modes check their own server
    check_openai_server(settings.llm, timeout)


def check_openai_server(cfg: LLMConfig, timeout: float = 3.0) -> None:
    if cfg.provider != "openai":
        return
    key = resolve_api_key(cfg)
    client = openai.OpenAI(api_key=key, base_url=cfg.base_url, timeout=timeout, max_retries=0)
    where = str(client.base_url).rstrip("/")
    try:
        client.models.list()
    except openai.APIConnectionError as exc:
        hint = "start it (Ollama: `ollama serve`)" if cfg.base_url else "check your network"
        raise VoicebotError(f"LLM server {where} is unreachable ({type(exc).__name__}): {hint} or fix "
                            "llm.base_url") from None
    except openai.AuthenticationError:
        raise VoicebotError(f"LLM server {where} rejected the API key: check ${cfg.api_key_env}") from None
    except openai.APIStatusError:
        pass  # some compatible servers have no /models; the server is up, which is what matters here
    finally:
        client.close()


def check_chat_llm(cfg: LLMConfig) -> None:
    """The chat model ``llm.*`` names can be reached (text turns use it in every mode)."""
    check_openai_server(cfg)
    if cfg.provider == "ollama":
        from bot.services.ollama import check_ollama

        check_ollama(cfg)


def preflight(settings: Settings) -> None:
    if settings.mode == "pipeline":
        check_chat_llm(settings.llm)
