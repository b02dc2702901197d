"""In-process chat backends that look like an OpenAI client to pipecat.

pipecat's ``OpenAILLMService`` already does what a voice bot needs from an LLM service: it turns the
conversation context into chat messages, streams text frames, measures time to first token and stops
when the user barges in. It talks to ``client.chat.completions.create(**params)`` and iterates the
``ChatCompletionChunk`` stream that comes back. The classes here provide exactly that surface for two
backends that need no server:

* :class:`LlamaChatClient` runs a GGUF model with llama-cpp-python on a worker thread (never on the
  event loop), streaming tokens back as chunks.
* :class:`ScriptedChatClient` replies with fixed lines, one per request, for tests and demos.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

from openai import NotGiven
from openai.types.chat import ChatCompletionChunk

from bot.cpu import SCHEDULER, SPEECH_FIRST, ModelPool, Work, current_session, thread_plan


def _given(value: Any, default: Any = None) -> Any:
    return default if value is None or isinstance(value, NotGiven) else value


def chat_chunk(content: str | None, model: str, chunk_id: str, finish: str | None = None) -> ChatCompletionChunk:
    """One streamed chunk as the OpenAI SDK types it (``None`` content: an empty delta, e.g. with ``finish``)."""
    return ChatCompletionChunk.model_validate({
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}],
    })


class _ThreadStream:
    """Async iterator over chunks produced by a blocking generator running on its own thread.

    Closing it (pipecat does so when the user interrupts) tells the thread to stop after the current
    token. ``produce`` holds its llama.cpp context for as long as it runs (a context can only run one
    generation at a time), so the next request on that context waits until this one has really stopped.
    """

    def __init__(self, produce: Callable[[threading.Event], Iterator[ChatCompletionChunk]]) -> None:
        self._produce = produce
        self._stop = threading.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._done = object()
        self._thread = threading.Thread(target=self._run, name="voicebot-llm", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed: nobody is listening any more
            self._stop.set()

    def _run(self) -> None:
        try:
            for chunk in self._produce(self._stop):
                if self._stop.is_set():
                    break
                self._put(chunk)
        except BaseException as exc:  # surfaced to the consumer, which reports it
            self._put(exc)
        finally:
            self._put(self._done)

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        item = await self._queue.get()
        if item is self._done:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._stop.set()


@functools.lru_cache(maxsize=4)
def _llama_pool(model_path: str, n_ctx: int, n_threads: int, size: int) -> ModelPool[Any]:
    """The process's llama.cpp contexts for one model and setting: up to ``size`` (the CPU plan's slots),
    shared by every session, handed out fairly (bot/cpu.py)."""

    def load() -> Any:
        from llama_cpp import Llama  # imported here: loading the native library takes a moment

        return Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                     verbose=False)

    return ModelPool(load, size)


def _steps(generation: Iterator[Any], session: str) -> Iterator[Any]:
    """Each step of a llama.cpp generation (the prompt, then every token) as one job on the CPU scheduler,
    after any speech being synthesized (bot/cpu.py)."""
    while True:
        SPEECH_FIRST.wait_turn()
        with SCHEDULER.job(Work.LLM, session=session):
            raw = next(generation, None)
        if raw is None:
            return
        yield raw


class LlamaChatClient:
    """``client.chat.completions.create`` backed by an in-process llama.cpp model.

    Threads: ``n_threads`` if given, else the CPU plan's (:func:`bot.cpu.thread_plan`)."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int = 0) -> None:
        plan = thread_plan()
        self.n_threads = n_threads or plan.llm
        self._pool = _llama_pool(model_path, n_ctx, self.n_threads, plan.slots)
        self._vocab = self._pool.first()  # load now: a bad file fails while the session is built
        self.model_name = model_path.rsplit("/", 1)[-1]
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the model's own tokenizer (for bot/context_window.py). The vocabulary is
        read-only, so this is safe beside a generation running on the same model."""
        return len(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def _create(self, *, messages: list[dict[str, Any]], **params: Any) -> _ThreadStream:
        llama_args = {
            "messages": messages,
            "stream": True,
            "max_tokens": _given(params.get("max_tokens")) or _given(params.get("max_completion_tokens")),
            "temperature": _given(params.get("temperature"), 0.7),
            "top_p": _given(params.get("top_p"), 0.95),
            "seed": _given(params.get("seed")),
        }
        llama_args = {k: v for k, v in llama_args.items() if v is not None}
        model = self.model_name
        session = current_session()  # the generation runs on a thread of its own: take the session along

        def produce(stop: threading.Event) -> Iterator[ChatCompletionChunk]:
            with self._pool.use(session=session) as llama:
                generation = llama.create_chat_completion(**llama_args)
                try:
                    for raw in _steps(iter(generation), session):
                        if stop.is_set():
                            return
                        raw.setdefault("model", model)
                        yield ChatCompletionChunk.model_validate(raw)
                finally:
                    close = getattr(generation, "close", None)
                    if close is not None:  # finish with the context before another request gets it
                        close()

        return _ThreadStream(produce)


class ScriptedChatClient:
    """Replies with ``script[0]``, then ``script[1]``, ... one per user turn; wraps around at the end.

    A request asked again at the same point of the conversation (a speculative answer that was withdrawn
    because the user went on, see :mod:`bot.turn_speculation`) gets the same reply as before.

    Text is streamed a word at a time so that downstream sentence splitting and moderation see the
    same shape of input as from a real model.
    """

    model_name = "scripted"

    def __init__(self, script: list[str]) -> None:
        if not script:
            raise ValueError("scripted LLM needs at least one reply in llm.script")
        self.script = list(script)
        self.calls: list[list[dict[str, Any]]] = []
        self._turn = -1
        self._position: int | None = None
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, *, messages: list[dict[str, Any]], **_: Any) -> AsyncIterator[ChatCompletionChunk]:
        self.calls.append([dict(m) for m in messages])
        position = len(messages)  # messages before this turn's user message(s)
        while position and isinstance(messages[position - 1], dict) and messages[position - 1].get("role") == "user":
            position -= 1
        if position != self._position:
            self._turn, self._position = self._turn + 1, position
        reply = self.script[self._turn % len(self.script)]
        chunk_id = f"scripted-{uuid.uuid4().hex[:8]}"

        async def stream() -> AsyncIterator[ChatCompletionChunk]:
            words = reply.split(" ")
            for i, word in enumerate(words):
                yield chat_chunk(word if i == 0 else " " + word, self.model_name, chunk_id)
                await asyncio.sleep(0)
            yield chat_chunk(None, self.model_name, chunk_id, finish="stop")

        return stream()
