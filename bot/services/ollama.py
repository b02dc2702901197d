"""``llm.provider = "ollama"``: Ollama's native chat API through the ``ollama`` package.

Native rather than Ollama's OpenAI-compatible ``/v1`` endpoint because the native one takes ``keep_alive``
(the model stays loaded between turns, so a turn never waits for a reload) and the model ``options``
(``num_ctx``, ``top_k``, ...) that ``/v1`` drops.

:class:`OllamaChatClient` gives pipecat's ``OpenAILLMService`` the one surface it calls,
``client.chat.completions.create(**params)`` returning a stream of ``ChatCompletionChunk`` (like the
in-process clients in :mod:`bot.services.local_chat`), over ``ollama.AsyncClient.chat(stream=True)``, which
reads ``/api/chat``'s streamed NDJSON. :func:`check_ollama` is the preflight: the server answers
(``/api/tags``), the model is pulled, and it can chat (``/api/show``), each failing in one line.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

from openai.types.chat import ChatCompletionChunk

from bot.config import LLMConfig
from bot.context_window import message_text
from bot.errors import VoicebotError
from bot.services.local_chat import chat_chunk

DEFAULT_HOST = "http://localhost:11434"


def _ollama():
    try:
        import ollama
    except ImportError:  # a runtime dependency; only a broken install lacks it
        raise VoicebotError("the `ollama` package is not installed: run `make setup` "
                            "(or `pip install ollama`)") from None
    return ollama


def host_of(cfg: LLMConfig) -> str | None:
    """The server to talk to: ``llm.base_url``, else None (the package then uses $OLLAMA_HOST or localhost)."""
    return cfg.base_url.rstrip("/") if cfg.base_url else None


def where(cfg: LLMConfig) -> str:
    import os

    return host_of(cfg) or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def keep_alive(value: str) -> str | float:
    """``"30m"`` stays a duration string; a bare number (``-1``, ``0``, ``300``) is sent as seconds, as
    the server expects numbers."""
    try:
        return float(value)
    except ValueError:
        return value


def model_options(cfg: LLMConfig) -> dict[str, Any]:
    """``llm.options`` plus temperature, max_tokens and n_ctx, checked against ``ollama.Options``."""
    options_type = _ollama().Options
    unknown = sorted(set(cfg.options) - set(options_type.model_fields))
    if unknown:
        raise VoicebotError(f"llm.options has {', '.join(map(repr, unknown))}, which Ollama does not know: use "
                            f"option names such as num_ctx, top_k, top_p, repeat_penalty, seed")
    if "num_ctx" in cfg.options:
        raise VoicebotError("llm.options.num_ctx: set llm.n_ctx instead (the conversation is cut to fit it, and it "
                            "is sent to Ollama as num_ctx)")
    # num_ctx = llm.n_ctx: the server's window is the one voicebot cuts the conversation to (bot/context_window.py)
    merged = {"temperature": cfg.temperature, "num_predict": cfg.max_tokens, "num_ctx": cfg.n_ctx, **cfg.options}
    try:
        return options_type.model_validate(merged).model_dump(exclude_none=True)
    except ValueError as exc:
        raise VoicebotError(f"llm.options is not valid for Ollama: {str(exc).splitlines()[0]}") from None


def to_ollama_messages(messages: list[Any]) -> list[dict[str, str]]:
    """OpenAI-style chat messages (what pipecat's adapter produces) as Ollama messages. ``developer`` is
    sent as ``system``; tool messages don't occur in voicebot's conversations and are dropped."""
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        role = "system" if role == "developer" else role
        if role in ("system", "user", "assistant"):
            out.append({"role": role, "content": message_text(message)})
    return out


class OllamaChatClient:
    """``client.chat.completions.create`` over ``ollama.AsyncClient.chat(stream=True)``."""

    def __init__(self, cfg: LLMConfig, *, timeout: float = 60.0) -> None:
        ollama = _ollama()
        self.model_name = cfg.model
        self.host = where(cfg)
        self.keep_alive = keep_alive(cfg.keep_alive)
        self.options = model_options(cfg)
        self._client = ollama.AsyncClient(host=host_of(cfg), timeout=timeout)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, *, messages: list[Any], **params: Any) -> AsyncIterator[ChatCompletionChunk]:
        options = dict(self.options)
        for key, name in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                          ("max_tokens", "num_predict")):  # the service's own settings win, like with OpenAI
            value = params.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                options[name] = value
        stream = await self._client.chat(model=self.model_name, messages=to_ollama_messages(messages),
                                         stream=True, options=options, keep_alive=self.keep_alive)
        chunk_id = f"ollama-{uuid.uuid4().hex[:8]}"
        model = self.model_name

        async def chunks() -> AsyncIterator[ChatCompletionChunk]:
            async for part in stream:
                if part.message.content:
                    yield chat_chunk(part.message.content, part.model or model, chunk_id)
                if part.done:
                    yield chat_chunk(None, part.model or model, chunk_id,
                                 finish="length" if part.done_reason == "length" else "stop")
                    return

        return chunks()


def _names(listing: Any) -> set[str]:
    names = set()
    for entry in listing.models:
        if entry.model:
            names.add(entry.model)
            if entry.model.endswith(":latest"):
                names.add(entry.model[: -len(":latest")])
    return names


def check_model_named(cfg: LLMConfig) -> None:
    if not cfg.model:
        raise VoicebotError("llm.provider is 'ollama' but llm.model is empty: set the model to chat with, e.g. "
                            "llm.model = \"llama3.2\" (after `ollama pull llama3.2`)")


def check_ollama(cfg: LLMConfig, timeout: float = 3.0) -> None:
    """The server answers, ``llm.model`` is pulled there and can chat; else one line saying what to do."""
    ollama = _ollama()
    check_model_named(cfg)
    model_options(cfg)
    at = where(cfg)
    client = ollama.Client(host=host_of(cfg), timeout=timeout)
    try:
        try:
            listing = client.list()
        except ConnectionError:
            raise VoicebotError(f"Ollama server {at} is unreachable: start it (`ollama serve`) or fix "
                                "llm.base_url") from None
        except ollama.ResponseError as exc:
            raise VoicebotError(f"Ollama server {at} answered /api/tags with HTTP {exc.status_code}: is it an "
                                "Ollama server? Fix llm.base_url") from None
        except Exception as exc:  # timeouts, bad URLs, garbage answers
            raise VoicebotError(f"Ollama server {at} did not answer properly ({type(exc).__name__}): "
                                "check that it runs and llm.base_url") from None
        if cfg.model not in _names(listing):
            raise VoicebotError(f"model {cfg.model!r} is not pulled on the Ollama server {at}: run "
                                f"`ollama pull {cfg.model}`")
        try:
            shown = client.show(cfg.model)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise VoicebotError(f"model {cfg.model!r} is not pulled on the Ollama server {at}: run "
                                    f"`ollama pull {cfg.model}`") from None
            raise VoicebotError(f"Ollama server {at} could not describe {cfg.model!r} (HTTP {exc.status_code}): "
                                f"{exc.error}") from None
        except Exception as exc:
            raise VoicebotError(f"Ollama server {at} did not answer /api/show properly ({type(exc).__name__}): "
                                "check the server") from None
        if shown.capabilities is not None and "completion" not in shown.capabilities:
            raise VoicebotError(f"Ollama model {cfg.model!r} cannot chat (capabilities: "
                                f"{', '.join(shown.capabilities) or 'none'}): pick a chat model for llm.model")
    finally:
        client.close()
