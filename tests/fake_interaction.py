"""A local stand-in for the AudioInteraction model's streaming server (the model repository's ``web/server.py``).

It speaks the same protocol, on 127.0.0.1 at a random port, from a thread of its own:

* ``GET /`` — a web page (the client's preflight);
* ``POST /audio`` — one 400 ms chunk of 16 kHz mono s16le PCM; a body that is not exactly 12,800 bytes is
  recorded in ``errors`` (the real server pads or cuts it silently, which would hide a client bug) and an empty
  one is answered 400 as the real server does. While a reply is being written the answer is ``409`` (the
  chunk is not heard); otherwise the model "steps" on the chunk and answers ``204`` — after broadcasting
  ``<|busy|>`` when it chose to speak on that chunk, as the real server does;
* ``GET /stream`` — server-sent events: ``: connected``, then ``data: <|busy|>``, the reply's pieces (newlines
  escaped as ``\\n``), ``data: <|end|>``, and ``data: <|cache_cleared|>`` from :meth:`clear_cache`.

The "model" decides like the real one in shape, not in intelligence: it finds stretches of speech by the
chunks' energy, and when one has ended (two quiet chunks) it takes the next entry of ``replies``: ``None`` =
stay silent, a string = speak it (split into a few pieces, streamed ``piece_secs`` apart). ``close_first_stream``
ends the first event stream after that many seconds, to exercise the client's reconnection.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

CHUNK_BYTES = 12_800
VOICED_RMS = 300.0  # s16 units: synthesized speech is far above, digital silence is 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Decision:
    chunk: int
    reply: str | None


@dataclass
class FakeInteractionServer:
    replies: list[str | None]
    piece_secs: float = 0.15
    close_first_stream: float | None = None
    port: int = field(default_factory=free_port)
    chunks: list[bytes] = field(default_factory=list)
    """Chunks heard (answered 204), in order."""
    refused: int = 0
    """Chunks answered 409 (the model was writing a reply)."""
    decisions: list[Decision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stream_connections: int = 0

    def __post_init__(self) -> None:
        self._replies = list(self.replies)
        self._voiced = False
        self._quiet = 0
        self._ready = True
        self._clients: list[asyncio.Queue[str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- protocol -----------------------------------------------------------------------------------

    def _broadcast(self, text: str) -> None:
        safe = text.replace("\r", "").replace("\n", "\\n")
        for q in list(self._clients):
            q.put_nowait(safe)

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>AudioInteraction (stand-in)</body></html>", content_type="text/html")

    async def audio(self, request: web.Request) -> web.Response:
        if not self._ready:
            self.refused += 1
            return web.Response(status=409, text="not ready")
        pcm = await request.read()
        if not pcm:
            return web.Response(status=400, text="empty")
        if len(pcm) != CHUNK_BYTES:
            self.errors.append(f"chunk {len(self.chunks)} is {len(pcm)} bytes, not {CHUNK_BYTES}")
        self.chunks.append(pcm)
        reply = self._step(pcm)
        if reply is not None:
            self._ready = False
            self._broadcast("<|busy|>")
            asyncio.get_running_loop().create_task(self._speak(reply))
        return web.Response(status=204)

    def _step(self, pcm: bytes) -> str | None:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
        voiced = len(samples) > 0 and float(np.sqrt(np.mean(samples ** 2))) > VOICED_RMS
        if voiced:
            self._voiced, self._quiet = True, 0
            return None
        if not self._voiced:
            return None
        self._quiet += 1
        if self._quiet < 2:
            return None
        self._voiced = False  # a stretch of speech has ended: decide
        reply = self._replies.pop(0) if self._replies else None
        self.decisions.append(Decision(chunk=len(self.chunks) - 1, reply=reply))
        return reply

    async def _speak(self, reply: str) -> None:
        try:
            words = reply.split(" ")
            pieces = [words[0]] + [" " + " ".join(words[i:i + 3]) for i in range(1, len(words), 3)]
            for piece in pieces:
                await asyncio.sleep(self.piece_secs)
                self._broadcast(piece)
        finally:
            self._broadcast("<|end|>")
            self._ready = True

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.stream_connections += 1
        first = self.stream_connections == 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue()
        self._clients.append(q)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_first_stream if first and self.close_first_stream else None
        try:
            await resp.write(b": connected\n\n")
            while True:
                timeout = 15.0 if deadline is None else max(0.0, deadline - loop.time())
                try:
                    msg = await asyncio.wait_for(q.get(), timeout=timeout)
                except asyncio.TimeoutError:
                    if deadline is not None:
                        break  # the stream goes away (a proxy, a restart): the client must come back
                    await resp.write(b": keepalive\n\n")
                    continue
                await resp.write(f"data: {msg}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.remove(q)
        return resp

    def clear_cache(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._broadcast, "<|cache_cleared|>")

    # -- running --------------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_post("/audio", self.audio)
        app.router.add_get("/stream", self.stream)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._started.set()
        loop.run_forever()
        loop.close()

    def __enter__(self) -> FakeInteractionServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None and self._thread is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
