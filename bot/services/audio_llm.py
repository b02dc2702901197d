"""The LLM stage of ``mode = "audio-llm"``: a chat model that hears the user's turn and answers in text.

One pipecat ``OpenAILLMService`` against any OpenAI-compatible ``/v1/chat/completions`` that takes an
``input_audio`` content part (OpenAI gpt-audio, vLLM, llama.cpp's server, Ollama). The user's turn goes
into the conversation context as an audio message, in the shape pipecat's own
``LLMContext.create_audio_message`` makes and ``OpenAILLMAdapter`` passes through unchanged::

    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}]}

so the context is what the model is sent. Where the audio comes from and how a turn is matched to it:
:mod:`bot.processors.turn_audio`.

* With ``audio_llm.transcribe_for_audit`` (default) the user aggregator writes Whisper's transcript of the
  turn to the context and (after input moderation) sends the context here; this service swaps that
  transcript for the turn's audio before the request: the model hears the turn, it is not told what
  Whisper made of it. (Once the turn is old, its transcript stands in for its audio in the history.)
* Without it, nothing writes the turn: this service adds the audio message itself when the user's turn
  ends (``UserStoppedSpeakingFrame``) and answers it.

History: the turns being answered (everything after the last assistant message) are always audio; the
``audio_llm.history_audio_turns`` user turns before them stay audio too; older ones are replaced in the
context by their transcript (or, when not transcribing, a one-line placeholder), so requests stay small.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import openai
from loguru import logger
from pipecat.audio.utils import pcm_to_wav
from pipecat.frames.frames import Frame, LLMContextFrame, UserStoppedSpeakingFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from bot.config import AudioLLMConfig
from bot.errors import VoicebotError
from bot.services.keys import api_key_from_env
from bot.frames import InputRefusedFrame
from bot.persona import Persona
from bot.processors.turn_audio import BYTES_PER_SAMPLE, HeardSpeech, Segment

OPENAI_URL = "https://api.openai.com/v1"
EARLIER_TURN = "(The user spoke here; the audio of this earlier turn is no longer sent.)"
"""Stands in for an old spoken turn whose audio left the context and that has no transcript."""
NO_USER_TURN = "(Nothing from the user here that you may hear.)"
"""Sent before a bot line that answered no turn the model saw (a greeting, a refusal by input moderation)."""


def resolve_api_key(cfg: AudioLLMConfig) -> str:
    """The key (see :func:`bot.services.keys.api_key_from_env`)."""
    return api_key_from_env(cfg.api_key_env, cfg.base_url, missing=(
        f"mode is 'audio-llm' on OpenAI (audio_llm.base_url is empty) but ${cfg.api_key_env} is not set: "
        "export your API key in that variable, or set audio_llm.base_url to a local server (vLLM, llama.cpp, "
        "Ollama)"))


def server_url(cfg: AudioLLMConfig) -> str:
    return (cfg.base_url or OPENAI_URL).rstrip("/")


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if err.get(key):
                    return _one_line(err[key])
        elif isinstance(err, str) and err:
            return _one_line(err)
        if body.get("detail"):
            return _one_line(body["detail"])
    if isinstance(body, str) and body.strip():
        return _one_line(body)
    return _one_line(exc.message)


def describe_error(exc: BaseException, cfg: AudioLLMConfig) -> str:
    """One line saying what went wrong with the audio LLM server and what to do about it."""
    where = server_url(cfg)
    if isinstance(exc, openai.APITimeoutError):
        return (f"audio LLM server {where} did not answer within {cfg.timeout_secs:g} s: it may be overloaded or "
                "still loading the model (audio_llm.timeout_secs)")
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
        return f"audio LLM server {where} is unreachable ({cause}): start it, or fix audio_llm.base_url"
    if isinstance(exc, openai.AuthenticationError):
        return f"audio LLM server {where} rejected the API key (401): check ${cfg.api_key_env}"
    if isinstance(exc, openai.APIStatusError):
        status, message = exc.status_code, _server_message(exc)
        if status == 404:
            hint = f"check that audio_llm.model ({cfg.model!r}) is a model the server serves"
        elif status in (400, 413, 415, 422):
            hint = ("check the model takes audio input; if the message is about the audio, keep "
                    "audio_llm.audio_format = \"wav\" (16 kHz mono PCM16)")
        elif status == 429:
            hint = "rate limited or out of quota"
        elif status >= 500:
            hint = "the server failed on this request: see its log"
        else:
            hint = "see the server's log"
        return f"audio LLM server {where} answered {status}: {message} ({hint})"
    if isinstance(exc, openai.APIError):
        return f"audio LLM server {where} sent an error: {_one_line(exc.message)}"
    return f"audio LLM request to {where} failed: {type(exc).__name__}: {_one_line(str(exc))}"


def check_server(cfg: AudioLLMConfig, api_key: str, timeout: float = 3.0) -> None:
    """Before a session: the server answers and accepts the key (one line if not)."""
    client = openai.OpenAI(api_key=api_key, base_url=cfg.base_url, timeout=timeout, max_retries=0)
    try:
        client.models.list()
    except (openai.APIConnectionError, openai.AuthenticationError) as exc:
        raise VoicebotError(describe_error(exc, cfg)) from None
    except openai.APIStatusError:
        pass  # some compatible servers have no /models: the server is up, which is what matters here
    finally:
        client.close()


def encode_audio(pcm: bytes, rate: int, fmt: str) -> str:
    """16-bit mono PCM -> base64 of a WAV (pipecat's ``pcm_to_wav``, as ``create_audio_message`` does) or
    an MP3 (libsndfile)."""
    if fmt == "wav":
        data = pcm_to_wav(pcm, rate, 1)
    else:
        import soundfile as sf

        from bot.audio import pcm_to_int16

        buf = io.BytesIO()
        sf.write(buf, pcm_to_int16(pcm), rate, format="MP3")
        data = buf.getvalue()
    return base64.b64encode(data).decode("ascii")


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def audio_data(message: Any) -> str | None:
    """The base64 audio of a user message, if it carries some."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "input_audio":
                return (part.get("input_audio") or {}).get("data")
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def alternate(messages: list[Any]) -> list[Any]:
    """The messages as strict chat templates want them (Gemma's raise otherwise): system first, then user and
    assistant alternating, starting with user. Consecutive user turns (an unanswered turn, then the next)
    become one message; consecutive bot lines one; a bot line with no user turn before it gets
    :data:`NO_USER_TURN`. New dicts where anything changes: the context itself is not touched."""
    out: list[Any] = []
    for message in messages:
        role = _role(message)
        if role in ("system", "developer") and all(_role(m) in ("system", "developer") for m in out):
            out.append(message)
            continue
        previous = _role(out[-1]) if out else None
        if role == "assistant" and previous not in ("user", "assistant"):
            out.append({"role": "user", "content": NO_USER_TURN})
            previous = "user"
        if role == previous == "user":
            out[-1] = {"role": "user", "content": _parts(out[-1]["content"]) + _parts(message.get("content"))}
        elif role == previous == "assistant" and isinstance(message.get("content"), str) \
                and isinstance(out[-1].get("content"), str) and not out[-1].get("tool_calls"):
            out[-1] = {"role": "assistant", "content": f"{out[-1]['content']} {message['content']}".strip()}
        else:
            out.append(message)
    return out


class AudioLLMService(OpenAILLMService):
    """``OpenAILLMService`` that sends the user's turns as audio. See the module docstring."""

    supports_developer_role = False  # local servers' chat templates know system/user/assistant only

    def __init__(self, *, cfg: AudioLLMConfig, heard: HeardSpeech, context: LLMContext, transcribed: bool,
                 **kwargs) -> None:
        self._cfg = cfg  # create_client (called by the base __init__) reads it
        super().__init__(**kwargs)
        self._heard = heard
        self._context = context
        self._transcribed = transcribed
        self._transcripts: list[tuple[dict[str, Any], str]] = []
        """(audio message in the context, Whisper's transcript of that turn), for when the turn gets old."""

    def build_chat_completion_params(self, params_from_context) -> dict:
        params = super().build_chat_completion_params(params_from_context)
        params["messages"] = alternate(params["messages"])
        return params

    def create_client(self, api_key=None, base_url=None, **kwargs):
        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=self._cfg.timeout_secs,
                                  max_retries=0)

    # -- the turn's audio ---------------------------------------------------------------------------

    async def audio_message(self, segments: list[Segment]) -> dict[str, Any]:
        pcm, rate = b"".join(s.pcm for s in segments), segments[0].rate
        keep = int(self._cfg.max_audio_secs * rate) * BYTES_PER_SAMPLE
        if len(pcm) > keep:
            logger.warning(f"{self}: user turn of {len(pcm) / BYTES_PER_SAMPLE / rate:.1f} s cut to its last "
                           f"{self._cfg.max_audio_secs:g} s (audio_llm.max_audio_secs)")
            pcm = pcm[-keep:]
        fmt = self._cfg.audio_format
        # A WAV is a header on the PCM; MP3 encoding takes a few ms per second of audio: off the event loop.
        data = encode_audio(pcm, rate, fmt) if fmt == "wav" else await asyncio.to_thread(encode_audio, pcm, rate, fmt)
        prompt = self._cfg.audio_prompt
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}] if prompt else []
        content.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
        return {"role": "user", "content": content}

    def _transcript_of(self, message: dict[str, Any]) -> str | None:
        """The transcript kept for an audio message (found by identity, else by its audio); forgotten."""
        for match in (lambda m: m is message, lambda m: audio_data(m) == audio_data(message)):
            for i, (kept, transcript) in enumerate(self._transcripts):
                if match(kept):
                    del self._transcripts[i]
                    return transcript
        return None

    async def hear(self, context: LLMContext) -> None:
        """Swap the transcripts of the turns about to be answered for their audio; age old audio out."""
        messages = context.get_messages()
        start = len(messages)
        while start > 0 and _role(messages[start - 1]) == "user":
            start -= 1
        for message in messages[start:]:
            content = message.get("content")
            if isinstance(content, str):
                segments = self._heard.take_for(content)
                if segments:  # else typed text, not speech: it goes as it is
                    message.update(await self.audio_message(segments))  # in place: the context's own dict
                    self._transcripts.append((message, content))
        self.age_history(messages)

    def age_history(self, messages: list[Any]) -> None:
        last_answer = max((i for i, m in enumerate(messages) if _role(m) == "assistant"), default=-1)
        earlier = [m for m in messages[: last_answer + 1] if _role(m) == "user" and audio_data(m)]
        for message in earlier[: max(0, len(earlier) - self._cfg.history_audio_turns)]:
            message["content"] = self._transcript_of(message) or EARLIER_TURN

    # -- frames -------------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            await self.hear(frame.context)
        elif isinstance(frame, InputRefusedFrame):
            self._heard.take_for(frame.text)  # a refused turn's audio never reaches the model
        elif isinstance(frame, UserStoppedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM \
                and not self._transcribed:
            segments = self._heard.take_all()
            if segments:
                self._context.add_message(await self.audio_message(segments))
                await self.queue_frame(LLMContextFrame(context=self._context))
        await super().process_frame(frame, direction)

    async def _process_context(self, context: LLMContext) -> None:
        try:
            await super()._process_context(context)
        except openai.APIError as exc:
            await self.push_error(error_msg=describe_error(exc, self._cfg), exception=exc)


def check_ready(cfg: AudioLLMConfig) -> str:
    """The model is named, the key is there and the server answers (one line if not). Returns the key."""
    if not cfg.model:
        raise VoicebotError("mode is 'audio-llm' but audio_llm.model is empty: set the model the server serves, "
                            "e.g. audio_llm.model = \"gpt-audio-mini\" (OpenAI) or "
                            "\"fixie-ai/ultravox-v0_5-llama-3_2-1b\" (vLLM)")
    api_key = resolve_api_key(cfg)
    check_server(cfg, api_key)
    return api_key


def make_audio_llm(cfg: AudioLLMConfig, persona: Persona, heard: HeardSpeech, context: LLMContext, *,
                   transcribed: bool) -> AudioLLMService:
    """The service, after checking the config, the key and that the server answers."""
    api_key = check_ready(cfg)
    settings = OpenAILLMService.Settings(model=cfg.model, system_instruction=persona.instructions,
                                         temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    return AudioLLMService(cfg=cfg, heard=heard, context=context, transcribed=transcribed, api_key=api_key,
                           base_url=cfg.base_url, settings=settings)
