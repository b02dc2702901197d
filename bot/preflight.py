"""Checks of the servers the chat model (``llm.*``) and the speech stages (``stt.*``, ``tts.*``) name, made
before they are used so a bad setup fails in one clear line instead of mid-turn.

Each mode's ``Mode.preflight`` (pipelines/) calls the ones it needs; text chat calls :func:`check_chat_llm`."""

from __future__ import annotations

import openai

from bot.config import LLMConfig, Settings
from bot.audit.signing import signer_from_env
from bot.errors import VoicebotError
from bot.outputs import check_output_dir
from bot.services.llm import resolve_api_key


def check_openai_server(cfg: LLMConfig, timeout: float = 3.0) -> None:
    if cfg.provider != "openai":
        return
    _check_endpoint("LLM", "llm", resolve_api_key(cfg), cfg.base_url, cfg.api_key_env, timeout,
                    start_hint="start it (Ollama: `ollama serve`)")


def check_audio_servers(settings: Settings, timeout: float = 3.0) -> None:
    """``stt.provider`` / ``tts.provider = "openai"``: the speech servers answer and accept the key."""
    from bot.services.keys import api_key_from_env

    for section, what in ((settings.stt, "STT"), (settings.tts, "TTS")):
        if section.provider != "openai":
            continue
        name = what.lower()
        key = api_key_from_env(section.api_key_env, section.base_url,
                               missing=f"{name}.provider = openai needs an API key in ${section.api_key_env} "
                                       f"(or set {name}.base_url to a local server)")
        _check_endpoint(what, name, key, section.base_url, section.api_key_env, timeout, start_hint="start it")


def _check_endpoint(what: str, section: str, key: str, base_url: str | None, key_env: str, timeout: float,
                    *, start_hint: str) -> None:
    client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
    where = str(client.base_url).rstrip("/")
    try:
        client.models.list()
    except openai.APIConnectionError as exc:
        hint = start_hint if base_url else "check your network"
        raise VoicebotError(f"{what} server {where} is unreachable ({type(exc).__name__}): {hint} or fix "
                            f"{section}.base_url") from None
    except openai.AuthenticationError:
        raise VoicebotError(f"{what} server {where} rejected the API key: check ${key_env}") from None
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


def check_audit(settings: Settings) -> None:
    """The audit folder can be written and, when signing is configured, the key is there (fail closed).
    Every session checks it before it builds anything (:class:`bot.session.Session`)."""
    if not settings.audit.enabled:
        return
    check_output_dir(settings.audit.dir, what="audit log", setting="audit.dir")
    signer_from_env(settings.audit.key_env)
