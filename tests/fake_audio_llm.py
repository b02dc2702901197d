"""A local stand-in for an audio LLM behind an OpenAI-compatible server (OpenAI gpt-audio, vLLM, llama.cpp).

Serves ``GET /v1/models`` and streamed ``POST /v1/chat/completions`` (``stream: true``: SSE
``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``) on 127.0.0.1 at a random port, from a
thread of its own, and **validates every request** the way a strict server would:

* the body against the ``openai`` package's request types (``CompletionCreateParamsStreaming``, each
  message's ``ChatCompletion*MessageParam``, each content part's ``ChatCompletionContentPart*Param``,
  ``input_audio`` = ``ChatCompletionContentPartInputAudioParam``), unknown keys included;
* the last user message carries an ``input_audio`` part whose base64 decodes to audio of the configured
  format (WAV: 16 kHz, mono, PCM16), of a plausible turn length, that contains speech (energy);
* the roles alternate user/assistant after the system prompt, as the strictest chat templates demand;
* the key, when the server is given one (``Authorization: Bearer ...``).

A request that fails validation is answered 400 with an OpenAI-style error body and recorded in
``errors``. Replies come from a scripted list, one per answered request, streamed a few words per chunk;
every chunk is built as ``openai.types.chat.ChatCompletionChunk`` so the stream is what the SDK parses.
``fail_statuses`` makes the next requests fail with those HTTP statuses (500, 401, ...);
``answer_delay`` makes the server slow to answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from aiohttp import web
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartInputAudioParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionDeveloperMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.chat.chat_completion_content_part_input_audio_param import InputAudio
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError

MESSAGE_TYPES: dict[str, Any] = {
    "system": ChatCompletionSystemMessageParam,
    "developer": ChatCompletionDeveloperMessageParam,
    "user": ChatCompletionUserMessageParam,
    "assistant": ChatCompletionAssistantMessageParam,
}
PART_TYPES: dict[str, Any] = {
    "text": ChatCompletionContentPartTextParam,
    "image_url": ChatCompletionContentPartImageParam,
    "input_audio": ChatCompletionContentPartInputAudioParam,
}
_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


def _keys(tp: Any) -> set[str]:
    return set(tp.__required_keys__) | set(tp.__optional_keys__)


def _check_typed(value: Any, tp: Any, where: str) -> list[str]:
    """``value`` is a ``tp`` (a TypedDict from the openai package), with no keys ``tp`` doesn't define."""
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    problems = [f"{where}: unknown key {k!r} (not in openai.types {tp.__name__})" for k in value if k not in _keys(tp)]
    try:
        _adapter(tp).validate_python(value)
    except ValidationError as exc:
        problems += [f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return problems


def validate_body(body: Any) -> list[str]:
    """Everything wrong with a chat completions request body, judged by the openai package's types."""
    problems = _check_typed(body, CompletionCreateParamsStreaming, "body")
    if problems and not isinstance(body, dict):
        return problems
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["body.messages: expected a non-empty list"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    turns = roles[next((i for i, r in enumerate(roles) if r not in ("system", "developer")), len(roles)):]
    if any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(turns)) or turns[-1:] != ["user"]:
        # What the strictest chat templates (Gemma's) raise on: after the system prompt, user and
        # assistant must alternate, starting and ending with user.
        problems.append(f"messages: roles must alternate user/assistant after the system prompt, got {turns}")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in MESSAGE_TYPES:
            problems.append(f"{where}.role: {role!r} is not one this server takes")
            continue
        shape = {k: v for k, v in message.items() if k != "content"}
        problems += _check_typed({**shape, "content": ""}, MESSAGE_TYPES[role], where)
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            problems.append(f"{where}.content: expected a string or a non-empty list of parts")
            continue
        allowed = ("text", "image_url", "input_audio") if role == "user" else ("text",)
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                problems.append(f"{where}.content[{j}].type: {kind!r} not allowed in a {role} message")
                continue
            problems += _check_typed(part, PART_TYPES[kind], f"{where}.content[{j}]")
            if kind == "input_audio":
                problems += _check_typed(part.get("input_audio"), InputAudio, f"{where}.content[{j}].input_audio")
    return problems


@dataclass
class HeardAudio:
    samples: np.ndarray
    rate: int
    format: str

    @property
    def secs(self) -> float:
        return len(self.samples) / self.rate


@dataclass
class Request:
    body: dict[str, Any]
    audio: list[HeardAudio] = field(default_factory=list)
    """Every input_audio part of the request, decoded, in message order (the last is the current turn)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]


def decode_audio(data: str, fmt: str, accept: typing.Collection[str]) -> tuple[HeardAudio | None, str | None]:
    """(audio, None) or (None, why it is unacceptable)."""
    if fmt not in accept:
        return None, f"unsupported audio format {fmt!r}: this server takes {', '.join(sorted(accept))}"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None, "input_audio.data is not valid base64"
    try:
        info = sf.info(io.BytesIO(raw))
        samples, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - anything libsndfile can't read is a bad upload
        return None, f"input_audio.data is not a readable {fmt} file: {exc}"
    if fmt == "wav" and (info.format != "WAV" or info.subtype != "PCM_16"):
        return None, f"expected WAV PCM_16, got {info.format} {info.subtype}"
    if fmt == "mp3" and info.format != "MP3":
        return None, f"expected MP3, got {info.format}"
    if rate != 16000 or samples.shape[1] != 1:
        return None, f"expected 16 kHz mono audio, got {rate} Hz with {samples.shape[1]} channels"
    return HeardAudio(samples[:, 0], rate, fmt), None


def voiced_secs(audio: HeardAudio, threshold: float = 0.01) -> float:
    """Seconds of 20 ms frames loud enough to be speech (not silence, not the hiss of a quiet room)."""
    n = int(audio.rate * 0.02)
    frames = audio.samples[: len(audio.samples) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(np.square(frames.astype(np.float64)), axis=1)) if len(frames) else np.zeros(0)
    return float(np.sum(rms > threshold)) * 0.02


class FakeAudioLLM:
    """``with FakeAudioLLM(["Reply one.", ...]) as server:``, then ``audio_llm.base_url = server.base_url``."""

    def __init__(self, replies: list[str], *, model: str = "fake/ultravox", api_key: str | None = None,
                 formats: typing.Collection[str] = ("wav",), fail_statuses: list[int] | None = None,
                 min_voiced_secs: float = 0.3, max_secs: float = 30.0, chunk_delay: float = 0.02,
                 answer_delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.model = model
        self.api_key = api_key
        self.formats = set(formats)
        self.fail_statuses = list(fail_statuses or [])
        self.min_voiced_secs = min_voiced_secs
        self.max_secs = max_secs
        self.chunk_delay = chunk_delay
        self.answer_delay = answer_delay
        self.requests: list[Request] = []
        """Requests that passed validation and were answered."""
        self.errors: list[str] = []
        """Why requests were rejected as malformed (400). A correct client leaves this empty."""
        self.seen = 0
        self._answered = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-audio-llm", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> FakeAudioLLM:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    # -- handlers -----------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                                 status=status)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self._error(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]})

    def _reject(self, message: str) -> web.Response:
        self.errors.append(message)
        return self._error(400, message)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        await asyncio.sleep(self.answer_delay)
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            return self._error(status, f"simulated failure {status}", kind="server_error" if status >= 500 else
                               "invalid_request_error")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._reject("body is not JSON")
        problems = validate_body(body)
        if problems:
            return self._reject("; ".join(problems[:5]))
        if body.get("model") != self.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", code="model_not_found")
        if body.get("stream") is not True:
            return self._reject("this server only answers stream: true")
        heard: list[HeardAudio] = []
        for message in body["messages"]:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part["type"] == "input_audio":
                    audio, why = decode_audio(part["input_audio"]["data"], part["input_audio"]["format"],
                                              self.formats)
                    if audio is None:
                        # Not a malformed request: an unsupported one, as a real server reports it.
                        return self._error(400, why)
                    heard.append(audio)
        users = [m for m in body["messages"] if m["role"] == "user"]
        last = users[-1] if users else None
        if last is None or not isinstance(last["content"], list) or \
                not any(p["type"] == "input_audio" for p in last["content"]):
            return self._reject("the last user message has no input_audio part: nothing to hear")
        current = heard[-1]
        if not 0.3 <= current.secs <= self.max_secs:
            return self._reject(f"user turn audio is {current.secs:.2f} s: not a plausible turn")
        if voiced_secs(current) < self.min_voiced_secs:
            return self._reject(f"user turn audio has only {voiced_secs(current):.2f} s above speech level")
        self.requests.append(Request(body=body, audio=heard))
        reply = self.replies[self._answered % len(self.replies)] if self.replies else ""
        self._answered += 1
        return await self._stream(request, body, reply)

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        ident, created = f"chatcmpl-fake{self._answered}", int(time.time())

        async def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk = ChatCompletionChunk.model_validate({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": self.model,
                "choices": choices, **({"usage": usage} if usage else {})})
            await response.write(f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        words = reply.split(" ")
        for i in range(0, len(words), 3):
            await asyncio.sleep(self.chunk_delay)
            piece = " ".join(words[i:i + 3]) + (" " if i + 3 < len(words) else "")
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage={"prompt_tokens": 100, "completion_tokens": len(words),
                                  "total_tokens": 100 + len(words)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def free_port() -> int:
    """A local port nothing listens on (for the unreachable-server case)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
