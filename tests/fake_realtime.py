"""A local, protocol-faithful stand-in for the OpenAI Realtime API (GA events), for tests.

``FakeRealtimeServer`` listens on 127.0.0.1 (random port) with the ``websockets`` package at
``ws://127.0.0.1:PORT/v1/realtime?model=...`` — what ``openai``'s ``client.realtime.connect`` opens for
``base_url = http://127.0.0.1:PORT/v1``. It plays a scripted :class:`Scenario`:

* **server VAD** on the appended pcm16 24 kHz audio (energy based: the tests' input is Piper speech and
  digital silence): ``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed``,
  ``conversation.item.added``, then the input transcription (the scenario's text for that turn);
* **responses** on ``response.create``: ``response.created``, ``response.output_item.added``,
  ``response.content_part.added``, then per word a ``response.output_audio_transcript.delta`` followed by
  the ``response.output_audio.delta`` s of that word's audio (Piper speech of the reply, resampled to
  24 kHz, cut per word in proportion to its letters), streamed ``speed`` times faster than real time, then
  the ``.done`` events and ``response.done``. Variants: the transcript lagging the audio, no transcript, an
  ``error`` event, the connection dropped mid-answer;
* ``response.cancel`` (``response.done`` with status ``cancelled``; an ``error`` if nothing is active),
  ``conversation.item.truncate`` (rejected, like the real API, past the audio sent), ``.delete``, ``.create``.

Every client event is validated against the ``openai`` package's own models (``openai.types.realtime``,
the member of ``RealtimeClientEvent`` its ``type`` names, **no unknown fields anywhere**) plus protocol
rules (pcm16 24 kHz, even-length base64 audio, truncation within the audio sent...). Every server event
the fake sends is validated against ``RealtimeServerEvent`` too. Problems are collected in
``server.problems``; tests assert it is empty.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

RATE = 24000
BYTES_PER_MS = 48
VAD_FRAME = 480  # 20 ms at 24 kHz


# -- validation against the openai package's models ---------------------------------------------------

def _union_members(alias: Any) -> dict[str, type[BaseModel]]:
    union = get_args(alias)[0]  # Annotated[Union[...], PropertyInfo]
    out = {}
    for member in get_args(union):
        kind = get_args(member.model_fields["type"].annotation)[0]
        out[kind] = member
    return out


def _client_models() -> dict[str, type[BaseModel]]:
    from openai.types.realtime import RealtimeClientEvent

    return _union_members(RealtimeClientEvent)


_SERVER_ADAPTER: TypeAdapter | None = None


def _extras(value: Any, path: str) -> list[str]:
    """Fields the models do not know (openai models accept and keep them as extras)."""
    problems = []
    if isinstance(value, BaseModel):
        if value.model_extra:
            problems.append(f"{path}: unknown field(s) {sorted(value.model_extra)}")
        for name in type(value).model_fields:
            problems += _extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problems += _extras(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            problems += _extras(v, f"{path}.{k}")
    return problems


def validate_client_event(data: Any, models: dict[str, type[BaseModel]] | None = None) -> list[str]:
    """Problems with one client event, checked against ``openai.types.realtime`` (empty = valid)."""
    models = models or _client_models()
    if not isinstance(data, dict):
        return [f"client event is not a JSON object: {data!r:.80}"]
    kind = data.get("type")
    model = models.get(kind)
    if model is None:
        return [f"unknown client event type {kind!r}"]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        return [f"{kind}: {exc}"]
    return _extras(parsed, kind)


def validate_server_event(data: dict[str, Any]) -> list[str]:
    global _SERVER_ADAPTER
    from openai.types.realtime import RealtimeServerEvent

    if _SERVER_ADAPTER is None:
        _SERVER_ADAPTER = TypeAdapter(RealtimeServerEvent)
    try:
        parsed = _SERVER_ADAPTER.validate_python(data)
    except ValidationError as exc:
        return [f"server event {data.get('type')}: {str(exc)[:300]}"]
    return _extras(parsed, str(data.get("type")))


# -- scenario ------------------------------------------------------------------------------------------

@dataclass
class Reply:
    """One model response."""

    text: str = ""
    speed: float = 3.0
    """Audio is streamed this many times faster than real time."""
    first_delta_secs: float = 0.2
    """Model latency: response.create -> first delta."""
    transcript: str = "ahead"
    """ahead: each word's transcript delta just before its audio (as the Realtime API streams);
    lag: all the audio first, the transcript ``lag_secs`` after the first audio; none: no transcript."""
    lag_secs: float = 0.0
    drop_after_words: int | None = None
    """Drop the connection (no close frame) after streaming this many words."""
    error: str | None = None
    """Answer with an ``error`` event and a failed response.done instead."""


@dataclass
class Scenario:
    transcripts: list[str] = field(default_factory=list)
    """The input transcription of the user's turns, in order."""
    replies: list[Reply] = field(default_factory=list)
    """The answers, in the order response.create asks for them."""
    reject_session: str | None = None
    """Answer session.update with an error on this param (e.g. the audio format)."""
    refuse_after_connections: int | None = None
    """Connections after this many are refused with HTTP 503."""
    transcription_delay_secs: float = 0.1
    vad_threshold: float = 0.01


@dataclass
class Item:
    id: str
    role: str
    audio_ms: float = 0.0
    truncated_ms: int | None = None


class _Audio:
    """The reply's speech: pcm16 24 kHz, and each word's byte range."""

    def __init__(self, text: str, pcm: bytes, words: list[tuple[str, bytes]]) -> None:
        self.text = text
        self.pcm = pcm
        self.words = words


def synthesize_reply(text: str) -> _Audio:
    """Piper speech of ``text`` per sentence (exact sentence boundaries), cut per word by letters."""
    import soxr

    from bot.speech import synthesize

    words_out: list[tuple[str, bytes]] = []
    pcm_all = bytearray()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    for si, sentence in enumerate(sentences):
        audio, rate = synthesize(sentence)
        audio = soxr.resample(audio, rate, RATE)
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        if si < len(sentences) - 1:
            pcm += bytes(int(0.15 * RATE) * 2)
        words = sentence.split()
        weights = [len(w) + 1 for w in words]
        total = sum(weights)
        pos = 0
        for i, (word, weight) in enumerate(zip(words, weights)):
            end = len(pcm) if i == len(words) - 1 else pos + int(len(pcm) * weight / total) // 2 * 2
            delta = word if not words_out else " " + word
            words_out.append((delta, pcm[pos:end]))
            pos = end
        pcm_all += pcm
    return _Audio(text, bytes(pcm_all), words_out)


# -- the server ----------------------------------------------------------------------------------------

class FakeRealtimeServer:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.received: list[tuple[int, dict[str, Any]]] = []
        """(connection number, client event) in arrival order (audio appends are counted, not kept)."""
        self.appended_bytes = 0
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.problems: list[str] = []
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        """Per connection: path, query and headers of the websocket handshake."""
        self.truncations: list[dict[str, Any]] = []
        self.cancels = 0
        self.item_audio_ms: dict[str, float] = {}
        """Assistant item id -> ms of audio sent for it."""
        self._audio: list[_Audio] = []
        self._turn = itertools.count()
        self._reply = itertools.count()
        self._ids = itertools.count(1)
        self._server = None
        self.base_url = ""
        self._models = _client_models()

    # -- lifecycle --

    async def __aenter__(self) -> FakeRealtimeServer:
        from websockets.asyncio.server import serve

        self._audio = [await asyncio.to_thread(synthesize_reply, r.text) if r.text else _Audio("", b"", [])
                       for r in self.scenario.replies]
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request,
                                   max_size=None)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, connection, request):
        limit = self.scenario.refuse_after_connections
        if limit is not None and self.connections >= limit:
            return connection.respond(503, "unavailable\n")
        return None

    # -- accessors for tests --

    def events(self, kind: str, connection: int | None = None) -> list[dict[str, Any]]:
        return [e for c, e in self.received if e.get("type") == kind and (connection is None or c == connection)]

    def reply_audio(self, n: int) -> _Audio:
        return self._audio[n]

    # -- per connection --

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    async def _handle(self, ws) -> None:
        self.connections += 1
        conn = _Connection(self, ws, self.connections)
        await conn.run()


class _Connection:
    def __init__(self, server: FakeRealtimeServer, ws, number: int) -> None:
        self.server = server
        self.ws = ws
        self.number = number
        self.session: dict[str, Any] = {}
        self.items: dict[str, Item] = {}
        self.last_item: str | None = None
        self.response_task: asyncio.Task | None = None
        self.response_id: str | None = None
        self.tasks: set[asyncio.Task] = set()
        # VAD
        self.buffer = bytearray()
        self.audio_ms = 0.0
        self.speaking = False
        self.voiced_ms = 0.0
        self.silence_ms = 0.0
        self.speech_item: str | None = None
        self.dropped = False

    def problem(self, text: str) -> None:
        self.server.problems.append(f"connection {self.number}: {text}")

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.server._id("event"))
        for p in validate_server_event(event):
            self.problem(f"fake sent an invalid event: {p}")
        self.server.sent.append((self.number, event))
        await self.ws.send(json.dumps(event))

    async def error(self, message: str, *, code: str, param: str | None = None, event_id: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        await self.send({"type": "error", "error": {"type": kind, "code": code, "message": message,
                                                     "param": param, "event_id": event_id}})

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        req = self.ws.request
        parts = urlsplit(req.path)
        self.server.requests.append({"path": parts.path, "query": parse_qs(parts.query),
                                     "authorization": req.headers.get("Authorization")})
        if parts.path != "/v1/realtime" or "model" not in parse_qs(parts.query):
            self.problem(f"unexpected websocket path {req.path!r}")
        if not (req.headers.get("Authorization") or "").startswith("Bearer "):
            self.problem("no bearer Authorization header")
        await self.send({"type": "session.created", "session": {
            "type": "realtime", "model": parse_qs(parts.query).get("model", [""])[0], "output_modalities": ["audio"],
            "instructions": "", "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                                    "turn_detection": {"type": "server_vad"}},
                                          "output": {"format": {"type": "audio/pcm", "rate": RATE},
                                                     "voice": "alloy"}}}})
        try:
            async for message in self.ws:
                await self.on_message(message)
        except ConnectionClosed:
            pass
        finally:
            for task in list(self.tasks) + ([self.response_task] if self.response_task else []):
                task.cancel()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            self.problem(f"client sent non-JSON {message!r:.60}")
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "input_audio_buffer.append":
            for p in validate_client_event(data, self.server._models):
                self.problem(p)
            try:
                pcm = base64.b64decode(data.get("audio", ""), validate=True)
            except ValueError:
                self.problem("input_audio_buffer.append: audio is not base64")
                return
            if len(pcm) % 2:
                self.problem("input_audio_buffer.append: odd byte count for pcm16")
            self.server.appended_bytes += len(pcm)
            await self.vad(pcm)
            return
        for p in validate_client_event(data, self.server._models):
            self.problem(p)
        self.server.received.append((self.number, data))
        handler = getattr(self, "on_" + (kind or "").replace(".", "_"), None)
        if handler is None:
            self.problem(f"fake does not handle {kind}")
            return
        await handler(data)

    # -- client events --

    async def on_session_update(self, data: dict[str, Any]) -> None:
        session = data.get("session") or {}
        if session.get("type") != "realtime":
            self.problem("session.update without session.type = realtime")
        audio = session.get("audio") or {}
        fmt_in = ((audio.get("input") or {}).get("format"))
        fmt_out = ((audio.get("output") or {}).get("format"))
        for name, fmt in (("input", fmt_in), ("output", fmt_out)):
            if fmt != {"type": "audio/pcm", "rate": RATE}:
                self.problem(f"session.update: audio.{name}.format is {fmt}, expected pcm 24 kHz")
        param = self.server.scenario.reject_session
        if param:
            await self.error("Invalid value: 'audio/pcm'. Supported values are: 'audio/pcmu' and 'audio/pcma'.",
                             code="invalid_value", param=param, event_id=data.get("event_id"))
            return
        self.session = session
        updated = json.loads(json.dumps(session))
        await self.send({"type": "session.updated", "session": updated})

    def turn_detection(self) -> dict[str, Any]:
        return ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection") or {}

    async def on_response_create(self, data: dict[str, Any]) -> None:
        if self.response_task is not None and not self.response_task.done():
            await self.error("Conversation already has an active response in progress",
                             code="conversation_already_has_active_response", event_id=data.get("event_id"))
            return
        self.response_task = self.spawn(self.respond())

    async def on_response_cancel(self, data: dict[str, Any]) -> None:
        task = self.response_task
        wanted = data.get("response_id")
        if task is None or task.done() or (wanted and wanted != self.response_id):
            await self.error("Cancellation failed: no active response found", code="response_cancel_not_active",
                             event_id=data.get("event_id"))
            return
        self.server.cancels += 1
        task.cancel()

    async def on_conversation_item_truncate(self, data: dict[str, Any]) -> None:
        item = self.items.get(data["item_id"])
        if item is None or item.role != "assistant":
            self.problem(f"truncate of unknown or non-assistant item {data['item_id']}")
            await self.error("Item not found", code="item_not_found", event_id=data.get("event_id"))
            return
        if data["audio_end_ms"] > item.audio_ms + 1:
            self.problem(f"truncate at {data['audio_end_ms']} ms past the {item.audio_ms:.0f} ms of audio sent")
            await self.error("audio_end_ms is longer than the audio", code="invalid_value",
                             param="audio_end_ms", event_id=data.get("event_id"))
            return
        item.truncated_ms = data["audio_end_ms"]
        self.server.truncations.append({"connection": self.number, **data, "audio_ms": item.audio_ms})
        await self.send({"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                         "audio_end_ms": data["audio_end_ms"]})

    async def on_conversation_item_delete(self, data: dict[str, Any]) -> None:
        if self.items.pop(data["item_id"], None) is None:
            self.problem(f"delete of unknown item {data['item_id']}")
            await self.error("Item not found", code="item_not_found", event_id=data.get("event_id"))
            return
        await self.send({"type": "conversation.item.deleted", "item_id": data["item_id"]})

    async def on_conversation_item_create(self, data: dict[str, Any]) -> None:
        item = dict(data["item"])
        item.setdefault("id", self.server._id("item"))
        item.update(object="realtime.item", status="completed")
        self.items[item["id"]] = Item(item["id"], item.get("role", ""))
        previous, self.last_item = self.last_item, item["id"]
        await self.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    # -- server VAD and transcription --

    async def vad(self, pcm: bytes) -> None:
        self.buffer += pcm
        td = self.turn_detection()
        silence_limit = td.get("silence_duration_ms", 500)
        while len(self.buffer) >= VAD_FRAME * 2:
            frame = np.frombuffer(bytes(self.buffer[:VAD_FRAME * 2]), dtype="<i2").astype(np.float32) / 32768
            del self.buffer[:VAD_FRAME * 2]
            self.audio_ms += 20
            voiced = float(np.sqrt(np.mean(frame ** 2))) > self.server.scenario.vad_threshold
            if not self.speaking:
                self.voiced_ms = self.voiced_ms + 20 if voiced else 0
                if self.voiced_ms >= 60 and td:
                    self.speaking = True
                    self.silence_ms = 0
                    self.speech_item = self.server._id("item")
                    start = self.audio_ms - self.voiced_ms - td.get("prefix_padding_ms", 300)
                    await self.send({"type": "input_audio_buffer.speech_started", "item_id": self.speech_item,
                                     "audio_start_ms": int(max(0, start))})
                continue
            self.silence_ms = 0 if voiced else self.silence_ms + 20
            if self.silence_ms >= silence_limit:
                self.speaking = False
                self.voiced_ms = 0
                await self.commit(int(self.audio_ms - self.silence_ms))

    async def commit(self, end_ms: int) -> None:
        item_id, self.speech_item = self.speech_item, None
        await self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item_id, "audio_end_ms": end_ms})
        previous, self.last_item = self.last_item, item_id
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {"id": item_id, "type": "message", "role": "user", "object": "realtime.item", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        self.items[item_id] = Item(item_id, "user")
        await self.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        if self.turn_detection().get("create_response", True):
            self.problem("turn_detection.create_response is not false: the server would answer on its own")
        self.spawn(self.transcribe(item_id))

    async def transcribe(self, item_id: str) -> None:
        await asyncio.sleep(self.server.scenario.transcription_delay_secs)
        n = next(self.server._turn)
        texts = self.server.scenario.transcripts
        text = texts[n] if n < len(texts) else ""
        if text:
            await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id,
                             "content_index": 0, "delta": text})
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                         "content_index": 0, "transcript": text,
                         "usage": {"type": "duration", "seconds": 1.0}})

    # -- responses --

    async def respond(self) -> None:
        n = next(self.server._reply)
        replies = self.server.scenario.replies
        reply = replies[n % len(replies)] if replies else Reply(text="")
        audio = self.server._audio[n % len(replies)] if replies else _Audio("", b"", [])
        rid = self.server._id("resp")
        self.response_id = rid
        item_id = self.server._id("item")
        item = Item(item_id, "assistant")
        self.items[item_id] = item
        self.server.item_audio_ms[item_id] = 0.0
        base = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        msg = {"id": item_id, "type": "message", "role": "assistant", "object": "realtime.item",
               "status": "in_progress", "content": []}
        status, details, sent_text = "completed", None, ""
        await self.send({"type": "response.created", "response": {
            "id": rid, "object": "realtime.response", "status": "in_progress", "output": [],
            "output_modalities": ["audio"]}})
        try:
            await asyncio.sleep(reply.first_delta_secs)
            if reply.error:
                await self.error(reply.error, code="server_error", kind="server_error")
                status, details = "failed", {"type": "failed", "error": {"type": "server_error",
                                                                        "code": "server_error",
                                                                        "message": reply.error}}
                return
            await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                             "item": msg})
            previous, self.last_item = self.last_item, item_id
            await self.send({"type": "conversation.item.added", "previous_item_id": previous, "item": msg})
            await self.send({"type": "response.content_part.added", **base,
                             "part": {"type": "audio", "transcript": ""}})

            async def audio_out(pcm: bytes) -> None:
                for i in range(0, len(pcm), 2400 * 2):  # deltas of up to 100 ms
                    piece = pcm[i:i + 4800]
                    await self.send({"type": "response.output_audio.delta", **base,
                                     "delta": base64.b64encode(piece).decode()})
                    item.audio_ms += len(piece) / BYTES_PER_MS
                    self.server.item_audio_ms[item_id] = item.audio_ms
                    await asyncio.sleep(len(piece) / BYTES_PER_MS / 1000 / reply.speed)

            async def text_out(delta: str) -> None:
                nonlocal sent_text
                sent_text += delta
                await self.send({"type": "response.output_audio_transcript.delta", **base, "delta": delta})

            if reply.transcript == "ahead":
                for k, (delta, pcm) in enumerate(audio.words):
                    if reply.drop_after_words is not None and k >= reply.drop_after_words:
                        self.dropped = True
                        self.ws.transport.abort()  # no close frame: the client sees code 1006
                        return
                    await text_out(delta)
                    await audio_out(pcm)
            else:
                async def late_text() -> None:
                    await asyncio.sleep(reply.lag_secs)
                    for delta, pcm in audio.words:
                        await text_out(delta)
                        await asyncio.sleep(len(pcm) / BYTES_PER_MS / 1000 / reply.speed)

                text_task = self.spawn(late_text()) if reply.transcript == "lag" else None
                try:
                    await audio_out(audio.pcm)
                    if text_task is not None:
                        await text_task
                finally:
                    if text_task is not None:
                        text_task.cancel()
            await self.send({"type": "response.output_audio.done", **base})
            await self.send({"type": "response.output_audio_transcript.done", **base, "transcript": sent_text})
            await self.send({"type": "response.content_part.done", **base,
                             "part": {"type": "audio", "transcript": sent_text}})
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": "client_cancelled"}
        finally:
            if self.ws.state.name == "OPEN" and not self.dropped:
                done_item = dict(msg, status="completed" if status == "completed" else "incomplete",
                                 content=[{"type": "output_audio", "transcript": sent_text}])
                if reply.error is None:
                    await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0,
                                     "item": done_item})
                response = {"id": rid, "object": "realtime.response", "status": status,
                            "output": [done_item] if reply.error is None else [],
                            "output_modalities": ["audio"]}
                if details:
                    response["status_details"] = details
                await self.send({"type": "response.done", "response": response})
