"""The LLM stage: one pipecat ``OpenAILLMService`` whose client depends on ``llm.provider``.

* ``embedded`` — SmolLM2-135M-Instruct (or any GGUF) in-process through llama-cpp-python.
* ``openai`` — any OpenAI-compatible server: OpenAI, llama.cpp server, vLLM (Ollama's /v1 too).
* ``ollama`` — Ollama's native chat API through the ``ollama`` package (:mod:`bot.services.ollama`).
* ``scripted`` — fixed replies from ``llm.script``, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from bot.config import LLMConfig
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.services import models
from bot.services.keys import api_key_from_env
from bot.services.local_chat import LlamaChatClient, ScriptedChatClient
from bot.turn_speculation import speculated_text

if TYPE_CHECKING:
    from bot.processors.moderation import SpeculationHost


class VoiceLLMService(OpenAILLMService):
    """``OpenAILLMService`` that skips a speculative request withdrawn before it got here.

    A speculative answer (:mod:`bot.turn_speculation`) is withdrawn with a system frame, which can pass
    the request still queued in front of this service; pipecat's gate would then hold that orphan
    answer and release it at the turn end next to the real one. Checked here, where requests are
    taken in order, the withdrawn request is never run.
    """

    def __init__(self, *, speculation: SpeculationHost | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.speculation = speculation
        """The end-of-turn strategy running speculations, or None."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and frame.speculation and self.speculation is not None \
                and not self.speculation.is_live(speculated_text(frame.context)):
            return
        await super().process_frame(frame, direction)


class LocalLLMService(VoiceLLMService):
    """``OpenAILLMService`` over an in-process client (see :mod:`bot.services.local_chat`)."""

    def __init__(self, client, **kwargs) -> None:
        self._local_client = client
        super().__init__(api_key="not-used", **kwargs)

    def create_client(self, *args, **kwargs):
        return self._local_client


@dataclass(frozen=True)
class LLMChoice:
    service: OpenAILLMService
    model: str
    """What the audit log and `voicebot models` report as the model."""


def _settings(cfg: LLMConfig, persona: Persona, model: str) -> OpenAILLMService.Settings:
    return OpenAILLMService.Settings(
        model=model,
        system_instruction=persona.instructions,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
    )


def resolve_api_key(cfg: LLMConfig) -> str:
    """The key for an OpenAI-compatible server (see :func:`bot.services.keys.api_key_from_env`)."""
    return api_key_from_env(cfg.api_key_env, cfg.base_url, missing=(
        f"llm.provider is 'openai' but ${cfg.api_key_env} is not set: export your API key in that variable, "
        "or set llm.base_url to a local server (e.g. Ollama)"))


@dataclass(frozen=True)
class ChatClient:
    """The chat backend ``llm.*`` names, as an object with ``chat.completions.create(**params)`` streaming
    ``ChatCompletionChunk``s: what pipecat's service calls for voice turns and :mod:`bot.text_chat` calls
    for text turns, so both talk to the same model."""

    client: Any
    model: str
    """The model name sent in requests."""
    description: str
    """What the audit log and `voicebot models` report as the model."""


def make_chat_client(cfg: LLMConfig) -> ChatClient:
    if cfg.provider == "scripted":
        if not cfg.script:
            raise VoicebotError("llm.provider is 'scripted' but llm.script is empty: add replies, "
                                'e.g. script = ["Hello there."] under [llm]')
        return ChatClient(ScriptedChatClient(cfg.script), "scripted", "scripted")

    if cfg.provider == "embedded":
        path = Path(cfg.model).expanduser() if cfg.model else models.smollm2_gguf().path
        if not path.is_file():
            raise VoicebotError(f"llm.model {path} is not a file: give a .gguf path, or leave it empty for the "
                                "embedded SmolLM2")
        try:
            client = LlamaChatClient(str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads)
        except ImportError:
            raise VoicebotError("llama-cpp-python is not installed: run `make setup`") from None
        except ValueError as exc:
            raise VoicebotError(f"llama.cpp could not load {path}: {exc}") from None
        return ChatClient(client, path.name, path.name)

    if cfg.provider == "ollama":
        from bot.services.ollama import OllamaChatClient, check_model_named

        check_model_named(cfg)
        client = OllamaChatClient(cfg)
        return ChatClient(client, cfg.model, f"{cfg.model} at {client.host}")

    # openai-compatible server
    _check_openai_model(cfg)
    import openai

    return ChatClient(openai.AsyncOpenAI(api_key=resolve_api_key(cfg), base_url=cfg.base_url), cfg.model, cfg.model)


def _check_openai_model(cfg: LLMConfig) -> None:
    if not cfg.model:
        raise VoicebotError("llm.provider is 'openai' but llm.model is empty: set the model name the server "
                            "serves, e.g. llm.model = \"gpt-4.1-mini\" or \"llama3.2\" for Ollama")


def make_llm(cfg: LLMConfig, persona: Persona, *, speculation: SpeculationHost | None = None) -> LLMChoice:
    """The LLM stage of the cascade. ``speculation``: the end-of-turn strategy whose withdrawn speculative
    requests the service skips (:class:`VoiceLLMService`)."""
    if cfg.provider == "openai":  # pipecat builds and configures its own OpenAI client
        _check_openai_model(cfg)
        service = VoiceLLMService(api_key=resolve_api_key(cfg), base_url=cfg.base_url, speculation=speculation,
                                  settings=_settings(cfg, persona, cfg.model))
        return LLMChoice(service, cfg.model)
    chat = make_chat_client(cfg)
    return LLMChoice(LocalLLMService(chat.client, speculation=speculation,
                                     settings=_settings(cfg, persona, chat.model)), chat.description)
