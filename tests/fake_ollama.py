"""A local stand-in for an Ollama server: ``/api/chat`` (streamed NDJSON), ``/api/tags`` and ``/api/show``.

It speaks the wire format the ``ollama`` package reads (ollama-python's ``_client.py``: a JSON body per
request, one JSON object per line for streamed answers, ``{"error": ...}`` with an HTTP status on failure),
and it is validated both ways with the package's own pydantic types: every request body must parse as
``ollama.ChatRequest`` / ``ollama.ShowRequest``, and every answer is built as ``ChatResponse``,
``ListResponse`` or ``ShowResponse`` before it is sent. Requests are kept in ``requests`` for the tests.

It runs on its own thread and event loop, so synchronous code (the preflight) and a running voicebot
session can both use it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import ollama
from aiohttp import web
from ollama._types import ChatRequest, ShowRequest  # the package's own request models

CREATED = "2026-11-22T12:00:00.000000000Z"


@dataclass
class FakeModel:
    name: str
    replies: list[str] = field(default_factory=lambda: ["Hello from Ollama."])
    capabilities: list[str] = field(default_factory=lambda: ["completion"])


class FakeOllama:
    def __init__(self, models: list[FakeModel], *, token_delay: float = 0.0) -> None:
        self.models = {m.name: m for m in models}
        self.token_delay = token_delay
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._turns: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FakeOllama:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-ollama", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Ollama server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    # -- helpers -----------------------------------------------------------------------------------

    def _model(self, name: str) -> FakeModel | None:
        return self.models.get(name) or self.models.get(f"{name}:latest")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _body(self, request: web.Request, kind: type) -> Any:
        body = await request.json()
        self.requests.append((request.path, body))
        try:
            return kind.model_validate(body)
        except ValueError as exc:
            self.errors.append(f"{request.path}: {exc}")
            raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json")

    # -- endpoints ---------------------------------------------------------------------------------

    async def _tags(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, {}))
        models = [{"name": m.name, "model": m.name, "modified_at": CREATED, "size": 397821319,
                   "digest": "a" * 64, "details": {"format": "gguf", "family": "qwen2", "families": ["qwen2"],
                                                   "parameter_size": "494.03M", "quantization_level": "Q4_K_M"}}
                  for m in self.models.values()]
        body = {"models": models}
        ollama.ListResponse.model_validate(body)
        return web.json_response(body)

    async def _show(self, request: web.Request) -> web.Response:
        req = await self._body(request, ShowRequest)
        model = self._model(req.model)
        if model is None:
            return self._error(404, f"model '{req.model}' not found")
        body = {"modelfile": f"FROM {model.name}\n", "parameters": "stop \"<|im_end|>\"",
                "template": "{{ .Prompt }}", "details": {"format": "gguf", "family": "qwen2"},
                "model_info": {"general.architecture": "qwen2"}, "capabilities": model.capabilities,
                "modified_at": CREATED}
        ollama.ShowResponse.model_validate(body)
        return web.json_response(body)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        req = await self._body(request, ChatRequest)
        model = self._model(req.model)
        if model is None:
            return self._error(404, f"model \"{req.model}\" not found, try pulling it first")
        if "completion" not in model.capabilities:
            return self._error(400, f"\"{req.model}\" does not support chat")
        turn = self._turns.get(model.name, 0)
        self._turns[model.name] = turn + 1
        reply = model.replies[turn % len(model.replies)]
        words = reply.split(" ")
        if not req.stream:  # the package sends stream=false for one-shot answers
            return web.json_response(self._line(model.name, reply, done=True, n=len(words)))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for i, word in enumerate(words):
            await response.write(json.dumps(self._line(model.name, word if i == 0 else " " + word)).encode() + b"\n")
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        await response.write(json.dumps(self._line(model.name, "", done=True, n=len(words))).encode() + b"\n")
        await response.write_eof()
        return response

    @staticmethod
    def _line(model: str, content: str, *, done: bool = False, n: int = 0) -> dict[str, Any]:
        line: dict[str, Any] = {"model": model, "created_at": CREATED,
                                "message": {"role": "assistant", "content": content}, "done": done}
        if done:
            line.update(done_reason="stop", total_duration=123456789, load_duration=1234567,
                        prompt_eval_count=42, prompt_eval_duration=2345678, eval_count=n, eval_duration=3456789)
        ollama.ChatResponse.model_validate(line)
        return line

    def chats(self) -> list[Any]:
        """The ``/api/chat`` requests received, as ``ollama.ChatRequest``."""
        return [ChatRequest.model_validate(body) for path, body in self.requests if path == "/api/chat"]
