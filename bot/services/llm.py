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

from pipecat.frames.frames import Frame, LLMContextFrame, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from bot.config import LLMConfig
from bot.context_window import ContextWindow, EstimateCounter, FunctionCounter, TokenCounter, openai_counter
from bot.errors import VoicebotError
from bot.frames import ContextTrimmedFrame, TurnFailedFrame
from bot.persona import Persona
from bot.services import models
from bot.services.keys import api_key_from_env
from bot.services.local_chat import LlamaChatClient, ScriptedChatClient
from bot.turn_speculation import speculated_text

if TYPE_CHECKING:
    from bot.processors.moderation import SpeculationHost


class VoiceLLMService(OpenAILLMService):
    """``OpenAILLMService`` for a voice conversation: bounded memory, never a silent turn, no orphan answers.

    * Before each request the conversation is cut to the model's context window (``window``, see
      :mod:`bot.context_window`); what was dropped is reported with a :class:`ContextTrimmedFrame`
      (audit record ``llm.context_trimmed``).
    * A turn that cannot be answered (it does not fit even alone, or the request fails) is not silent:
      the persona's ``fallback`` line is spoken and a :class:`TurnFailedFrame` marks the turn failed.
    * A speculative answer (:mod:`bot.turn_speculation`) is withdrawn with a system frame, which can pass
      the request still queued in front of this service; pipecat's gate would then hold that orphan
      answer and release it at the turn end next to the real one. Checked here, where requests are
      taken in order, the withdrawn request is never run.
    """

    def __init__(self, *, speculation: SpeculationHost | None = None, window: ContextWindow | None = None,
                 fallback: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.speculation = speculation
        """The end-of-turn strategy running speculations, or None."""
        self.window = window
        """Every request is cut to fit it (:func:`context_window`); None = unbounded."""
        self.fallback = fallback
        """The persona's fallback line, spoken when a turn cannot be answered."""
        self._answering = False
        self._reported_upto = 0  # conversation positions before this were reported as left out already

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and frame.speculation and self.speculation is not None \
                and not self.speculation.is_live(speculated_text(frame.context)):
            return
        if not isinstance(frame, LLMContextFrame):
            await super().process_frame(frame, direction)
            return
        self._answering = True
        try:
            await super().process_frame(frame, direction)
        finally:
            self._answering = False

    async def get_chat_completions(self, context: LLMContext):
        """The request, cut to the window. The conversation itself is not changed (a speculative request
        works on a copy of it); what is left out of requests is reported once, when first left out. A turn
        that does not fit even alone raises :class:`ContextOverflow`: pipecat reports the error and
        :meth:`push_error` speaks the fallback line (held with the response if it was speculative)."""
        if self.window is not None:
            messages = context.get_messages()
            kept, trim = self.window.fit(messages, keep_from=self._reported_upto)
            if trim.dropped:
                if trim.upto > self._reported_upto:
                    await self.push_frame(ContextTrimmedFrame(data=trim.audit(self.window, self._reported_upto)))
                    self._reported_upto = trim.upto
                context = LLMContext(messages=kept, tools=context.tools, tool_choice=context.tool_choice)
        return await super().get_chat_completions(context)

    async def push_error(self, error_msg: str, exception: Exception | None = None, *args, **kwargs) -> None:
        await super().push_error(error_msg, exception, *args, **kwargs)
        if self._answering:  # the request for this turn failed: say so instead of going quiet
            self._answering = False
            await self.fail_turn(error_msg, reported=True)

    async def fail_turn(self, reason: str, *, reported: bool) -> None:
        """Mark the turn failed and speak the persona's fallback line (if it has one)."""
        await self.push_frame(TurnFailedFrame(reason=reason, fallback=self.fallback, reported=reported))
        if self.fallback:
            await self.push_frame(TTSSpeakFrame(self.fallback))


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


def token_counter(cfg: LLMConfig, client: Any) -> TokenCounter:
    """How a provider's tokens are counted for its context window: the model's own tokenizer where there is
    one in-process (llama.cpp), tiktoken for OpenAI models when installed, else a conservative estimate."""
    if cfg.provider == "embedded" and isinstance(client, LlamaChatClient):
        return FunctionCounter("llama.cpp tokenizer", client.count_tokens)
    if cfg.provider == "openai":
        return openai_counter(cfg.model)
    return EstimateCounter()


def context_window(cfg: LLMConfig, persona: Persona, client: Any) -> ContextWindow:
    """The window every request to this model is cut to; refuses (at start) a persona whose prompt cannot
    fit, naming the field and the limit. Voice turns (:class:`VoiceLLMService`) and text turns
    (:mod:`bot.text_chat`) both use it."""
    if cfg.max_tokens + 64 > cfg.n_ctx:
        raise VoicebotError(f"llm.max_tokens = {cfg.max_tokens} leaves no room for the conversation in llm.n_ctx = "
                            f"{cfg.n_ctx}: lower llm.max_tokens or raise llm.n_ctx")
    window = ContextWindow(n_ctx=cfg.n_ctx, reply_tokens=cfg.max_tokens, counter=token_counter(cfg, client),
                           system=persona.instructions)
    window.check_prompt(f"persona {persona.name!r} ({persona.source or 'inline'})")
    return window


def make_llm(cfg: LLMConfig, persona: Persona, *, speculation: SpeculationHost | None = None) -> LLMChoice:
    """The LLM stage of the cascade. ``speculation``: the end-of-turn strategy whose withdrawn speculative
    requests the service skips (:class:`VoiceLLMService`)."""
    if cfg.provider == "openai":  # pipecat builds and configures its own OpenAI client
        _check_openai_model(cfg)
        service = VoiceLLMService(api_key=resolve_api_key(cfg), base_url=cfg.base_url, speculation=speculation,
                                  window=context_window(cfg, persona, None), fallback=persona.fallback,
                                  settings=_settings(cfg, persona, cfg.model))
        return LLMChoice(service, cfg.model)
    chat = make_chat_client(cfg)
    service = LocalLLMService(chat.client, speculation=speculation, window=context_window(cfg, persona, chat.client),
                              fallback=persona.fallback, settings=_settings(cfg, persona, chat.model))
    return LLMChoice(service, chat.description)
