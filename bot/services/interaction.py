"""The model stage of ``mode = "interaction"``: a client for the AudioInteraction model's own streaming server.

The server (the model repository's ``web/server.py``) hears the input as a stream and decides itself, for every
400 ms chunk, whether to speak:

* ``POST /audio`` — body: one chunk, 400 ms of 16 kHz mono s16le PCM (12,800 bytes). The server runs one model
  step on it and answers ``204``; while the model is writing a reply it is not listening and answers ``409``
  (its own web page stops sending then, and the model's state is reset after each reply, so a chunk refused
  with 409 is dropped, not sent again later).
* ``GET /stream`` — server-sent events (``data: ...`` lines; ``: keepalive`` comments every 15 s): ``<|busy|>``
  when the model chose to speak, then the reply's text pieces (the first may be an emotion emoji; a newline in
  a piece arrives as the two characters ``\\n``), then ``<|end|>``; ``<|cache_cleared|>`` when the server resets
  its state on its own.
* ``GET /`` — the server's web page: the cheap preflight.

:class:`InteractionService` sits where the LLM sits in the cascade. It cuts the input audio into chunks and
posts them in order; it turns the event stream into ``LLMFullResponseStartFrame`` / ``LLMTextFrame`` /
``LLMFullResponseEndFrame``, so output moderation, TTS and turn tracking work unchanged. A leading emotion
emoji is not spoken; it is kept in the audit log. The model's decisions are audited as spans
(``interaction.decision``): a run of chunks it stayed silent through is one record, each reply one record.

With input moderation on (the default) or transcript processors placed (``SessionHooks.on_transcript``, e.g.
Discord's reply gate), a reply that starts while user speech has no verdict yet is held until it has one:
approval releases it; a refusal (the persona's refusal is spoken instead) or a turn the processors held back
drops it, and so does no verdict within ``interaction.verdict_wait_secs`` of the end of that speech (fail
closed). Each user turn awaits its own verdict (:class:`_Utterance`, opened by the VAD, closed by the user
aggregator's turn end; verdicts come in turn order): a reply is released only when every utterance heard
so far is approved, so approving one utterance never releases a reply to a later one still being checked.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import aiohttp
from loguru import logger
from pipecat.frames.frames import (CancelFrame, EndFrame, Frame, InputAudioRawFrame, LLMContextFrame,
                                   LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame, StartFrame,
                                   UserStartedSpeakingFrame, UserStoppedSpeakingFrame, VADUserStartedSpeakingFrame,
                                   VADUserStoppedSpeakingFrame)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_delay, wait_exponential

from bot.config import InteractionConfig
from bot.errors import VoicebotError
from bot.frames import AuditEventFrame, InputRefusedFrame, UserTurnHeldFrame

SAMPLE_RATE = 16000
CHUNK_BYTES = SAMPLE_RATE * 400 // 1000 * 2  # 12,800
CHUNK_SECS = 0.4
BUSY, END, CACHE_CLEARED = "<|busy|>", "<|end|>", "<|cache_cleared|>"
MAX_BEHIND_CHUNKS = 25
"""Chunks waiting to be posted (10 s of audio) before the oldest is dropped: a server slower than real time
must not make the client hold ever more audio, nor hear it ever later."""


class ChunkAnswer(Enum):
    HEARD = "heard"  # 204: the model took one step on it
    NOT_LISTENING = "not-listening"  # 409: the model is writing a reply; the chunk is dropped


def server_url(cfg: InteractionConfig) -> str:
    return cfg.base_url.rstrip("/")


def unreachable(cfg: InteractionConfig, exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    why = reason if isinstance(reason, str) else type(reason).__name__
    return (f"AudioInteraction server {server_url(cfg)} is unreachable ({why}): "
            "start the model's web/server.py (it needs a GPU with ~12 GB), or fix interaction.base_url")


def check_server(cfg: InteractionConfig) -> None:
    """Before a session: ``GET /`` answers (one line if not)."""
    try:
        with urllib.request.urlopen(server_url(cfg) + "/", timeout=cfg.connect_timeout_secs) as resp:
            resp.read(1)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise VoicebotError(f"AudioInteraction server {server_url(cfg)} answered {exc.code} to GET /: "
                                "see the server's log") from None
        # 404 etc.: something answers; POST /audio will say more.
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise VoicebotError(unreachable(cfg, exc)) from None


def split_emotion(text: str) -> tuple[str, str]:
    """``("😊", "Hello")`` from ``"😊 Hello"``: the leading emoji (symbols, their modifiers and joiners) and the
    rest, which is what is spoken."""
    i = 0
    while i < len(text):
        ch = text[i]
        cat = unicodedata.category(ch)
        if cat in ("So", "Sk", "Cf", "Mn", "Me") or ch.isspace() or 0xFE00 <= ord(ch) <= 0xFE0F:
            i += 1
            continue
        break
    return text[:i].strip(), text[i:]


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (comments skipped; several ``data`` lines joined with newlines)."""
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


@dataclass
class _Utterance:
    """User speech (one user turn) waiting for its verdict."""

    stopped: float | None = None
    """When the speech last stopped (None while it goes on): no verdict ``verdict_wait_secs`` later fails closed."""


class StreamLost(Exception):
    """The event stream ended or failed: reconnect."""


@dataclass
class _Reply:
    decided_at: int
    """Index of the chunk the model decided on."""
    started: float = field(default_factory=time.monotonic)
    pieces: list[str] = field(default_factory=list)
    emotion: str = ""
    spoken_started: bool = False
    held: list[Frame] | None = None
    """Frames waiting for the input verdict (None: not held)."""
    withheld: Literal["input-refused", "held-back", "no-verdict"] | None = None
    dropped_chunks: int = 0
    ended: float | None = None


class InteractionService(FrameProcessor):
    """Streams the input to the AudioInteraction server and speaks its decisions. See the module docstring."""

    def __init__(self, cfg: InteractionConfig, *, hold_for_verdict: bool, **kwargs) -> None:
        """``hold_for_verdict``: input moderation or transcript processors (``SessionHooks.on_transcript``) decide
        whether the user's speech may be answered; a reply waits for that."""
        super().__init__(**kwargs)
        self._cfg = cfg
        self._url = server_url(cfg)
        self._hold = hold_for_verdict
        self._buffer = bytearray()
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._next_index = 0
        self._in_flight: int | None = None
        self._last_posted = -1
        self._silent_from: int | None = None
        self._silent_to = -1
        self._dropped_outside_reply = 0
        self._reply: _Reply | None = None
        self._unresolved: list[_Utterance] = []
        """User turns with no verdict yet, oldest first (verdicts come in the same order)."""
        self._open: _Utterance | None = None
        """The user turn being spoken (not yet ended by the user aggregator): more speech belongs to it."""
        self._post_failing = False
        self.unsent_chunks = 0
        """Chunks dropped unsent because the server fell more than MAX_BEHIND_CHUNKS behind."""
        self._unsent_unreported = 0
        self._refused: tuple[float, Literal["input-refused", "held-back"]] | None = None
        """When user speech was last refused or held back: a reply starting soon after answers it."""
        self._pending_end: tuple[_Reply, bool] | None = None
        """A reply that ended while held for the input verdict (and whether it was cut)."""
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle ------------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop(flush=isinstance(frame, EndFrame))
            await self.push_frame(frame, direction)
            return
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, InputAudioRawFrame):
                self._audio(frame)
            elif isinstance(frame, LLMContextFrame):
                await self._resolve("approved")  # the user's speech passed input moderation
                return  # the model hears the audio, not the context
            elif isinstance(frame, InputRefusedFrame):
                await self._resolve("refused")
            elif isinstance(frame, UserTurnHeldFrame):
                await self._resolve("held-back")  # a transcript processor let none of it through
            elif isinstance(frame, (VADUserStartedSpeakingFrame, UserStartedSpeakingFrame)) and self._hold:
                self._speech_started()
            elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._open is not None:
                self._open.stopped = time.monotonic()
            elif isinstance(frame, UserStoppedSpeakingFrame) and self._open is not None:
                # The user aggregator ended the turn: its verdict is on its way; speech after this is a new turn.
                if self._open.stopped is None:
                    self._open.stopped = time.monotonic()
                self._open = None
        await self.push_frame(frame, direction)

    async def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self._cfg.connect_timeout_secs)
        self._http = aiohttp.ClientSession(timeout=timeout)
        self._tasks = [self.create_task(self._post_loop(), "interaction-post"),
                       self.create_task(self._stream_loop(), "interaction-stream"),
                       self.create_task(self._verdict_watch(), "interaction-verdict")]

    async def _stop(self, *, flush: bool) -> None:
        if flush and self._http is not None:
            if self._buffer:  # the last partial chunk, padded with silence as the server pads it
                self._enqueue(bytes(self._buffer) + b"\0" * (CHUNK_BYTES - len(self._buffer)))
                self._buffer.clear()
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._tasks[0]), timeout=self._cfg.timeout_secs)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks = []
        if self._reply is not None:
            await self._finish_reply(cut=True)
        await self._close_silent(self._next_index)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- audio in -------------------------------------------------------------------------------------

    def _audio(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != SAMPLE_RATE or frame.num_channels != 1:
            return  # the transport hears at 16 kHz mono (transport.sample_rate); nothing else is sent
        self._buffer += frame.audio
        while len(self._buffer) >= CHUNK_BYTES:
            self._enqueue(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    def _enqueue(self, chunk: bytes) -> None:
        if self._queue.qsize() >= MAX_BEHIND_CHUNKS:
            self._queue.get_nowait()  # the oldest: the server is more than 10 s behind
            if not self.unsent_chunks:
                logger.warning(f"{self}: the AudioInteraction server is more than {MAX_BEHIND_CHUNKS * CHUNK_SECS:g} s "
                               "behind the input; the oldest chunks are dropped unsent")
            self.unsent_chunks += 1
            self._unsent_unreported += 1
        self._queue.put_nowait((self._next_index, chunk))
        self._next_index += 1

    async def _post_loop(self) -> None:
        while (item := await self._queue.get()) is not None:
            index, chunk = item
            self._in_flight = index
            try:
                answer = await self._post(chunk)
            except VoicebotError as exc:
                if not self._post_failing:
                    self._post_failing = True
                    await self.push_error(error_msg=str(exc))
                continue
            finally:
                self._in_flight = None
            self._post_failing = False
            self._last_posted = index
            if answer is ChunkAnswer.NOT_LISTENING:
                if self._reply is not None:
                    self._reply.dropped_chunks += 1
                else:
                    self._dropped_outside_reply += 1
            elif self._reply is None or self._reply.decided_at != index:
                if self._silent_from is None:
                    self._silent_from = index
                self._silent_to = index

    async def _post(self, chunk: bytes) -> ChunkAnswer:
        assert self._http is not None
        try:
            async with self._http.post(f"{self._url}/audio", data=chunk,
                                       headers={"Content-Type": "application/octet-stream"},
                                       timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_secs)) as resp:
                if resp.status == 409:
                    return ChunkAnswer.NOT_LISTENING
                if resp.status in (200, 204):
                    return ChunkAnswer.HEARD
                body = " ".join((await resp.text()).split())[:200]
                raise VoicebotError(f"AudioInteraction server {self._url} answered {resp.status} to POST /audio: "
                                    f"{body or resp.reason} (see the server's log)")
        except asyncio.TimeoutError:
            raise VoicebotError(f"AudioInteraction server {self._url} did not answer a chunk within "
                                f"{self._cfg.timeout_secs:g} s (interaction.timeout_secs): is its GPU busy?") from None
        except aiohttp.ClientError as exc:
            raise VoicebotError(unreachable(self._cfg, exc)) from None

    # -- events in ------------------------------------------------------------------------------------

    async def _stream_loop(self) -> None:
        retrying = AsyncRetrying(wait=wait_exponential(multiplier=0.25, max=5.0),
                                 stop=stop_after_delay(self._cfg.reconnect_max_secs),
                                 retry=retry_if_exception_type((StreamLost, aiohttp.ClientError, asyncio.TimeoutError,
                                                                OSError)),
                                 reraise=False)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._stream_once()
        except RetryError:
            await self.push_error(error_msg=f"AudioInteraction server {self._url}: its event stream (GET /stream) "
                                            f"could not be reconnected for {self._cfg.reconnect_max_secs:g} s "
                                            "(interaction.reconnect_max_secs): is the server running?")

    async def _stream_once(self) -> None:
        assert self._http is not None
        async with self._http.get(f"{self._url}/stream", headers={"Accept": "text/event-stream"}) as resp:
            if resp.status != 200:
                raise StreamLost(f"GET /stream answered {resp.status}")
            async for message in sse_messages(resp):
                await self._event(message)
        if self._reply is not None:  # the stream went away mid-reply: what came is all that will come
            await self._finish_reply(cut=True)
        raise StreamLost("the event stream ended")

    async def _event(self, message: str) -> None:
        if message == BUSY:
            decided = self._in_flight if self._in_flight is not None else max(self._last_posted, 0)
            await self._close_silent(decided)
            self._reply = _Reply(decided_at=decided,
                                 held=[] if self._hold and self._unresolved else None)
            if self._reply.held is None and self._refused is not None and \
                    time.monotonic() - self._refused[0] < self._cfg.verdict_wait_secs:
                self._reply.withheld = self._refused[1]  # the model answers the speech that was just refused
            await self._out(LLMFullResponseStartFrame())
        elif message == END:
            if self._reply is not None:
                await self._finish_reply(cut=False)
        elif message == CACHE_CLEARED:
            index = max(self._last_posted, 0)
            await self.push_frame(AuditEventFrame(kind="interaction.cache_cleared",
                                                  data={"t": round((index + 1) * CHUNK_SECS, 3)}))
        elif self._reply is not None:
            text = message.replace("\\n", "\n")
            reply = self._reply
            reply.pieces.append(text)
            if not reply.spoken_started:
                emotion, text = split_emotion(text)
                reply.emotion += emotion
                if not text.strip():
                    return
                reply.spoken_started = True
            await self._out(LLMTextFrame(text))

    async def _out(self, frame: Frame) -> None:
        reply = self._reply
        if reply is not None and reply.withheld:
            return
        if reply is not None and reply.held is not None:
            reply.held.append(frame)
            return
        await self.push_frame(frame)

    async def _finish_reply(self, *, cut: bool) -> None:
        reply = self._reply
        if reply is None:
            return
        reply.ended = time.monotonic()
        await self._out(LLMFullResponseEndFrame())
        if reply.held is not None and not reply.withheld:
            # Still waiting for the verdict: the end stays held; the watch releases or drops the reply.
            self._pending_end = (reply, cut)
            return
        await self._audit_reply(reply, cut)

    async def _audit_reply(self, reply: _Reply, cut: bool) -> None:
        if self._reply is reply:
            self._reply = None
        start = reply.decided_at * CHUNK_SECS
        await self.push_frame(AuditEventFrame(kind="interaction.decision", data={
            "decision": "speak", "start_s": round(start, 3), "end_s": round(start + CHUNK_SECS, 3), "chunks": 1,
            "emotion": reply.emotion or None, "text": "".join(reply.pieces).replace("\\n", "\n"),
            "spoken": reply.withheld is None, "withheld": reply.withheld,
            "dropped_chunks": reply.dropped_chunks, "reply_s": round((reply.ended or time.monotonic()) - reply.started, 3),
            **({"cut": True} if cut else {})}))

    async def _close_silent(self, before: int) -> None:
        """Write the run of chunks the model stayed silent through, up to chunk ``before`` (excluded)."""
        if self._silent_from is None:
            return
        last = min(self._silent_to, before - 1)
        first, self._silent_from, self._silent_to = self._silent_from, None, -1
        if last < first:
            return
        data = {"decision": "silent", "start_s": round(first * CHUNK_SECS, 3),
                "end_s": round((last + 1) * CHUNK_SECS, 3), "chunks": last - first + 1}
        if self._dropped_outside_reply:
            data["dropped_chunks"], self._dropped_outside_reply = self._dropped_outside_reply, 0
        if self._unsent_unreported:
            data["unsent_chunks"], self._unsent_unreported = self._unsent_unreported, 0
        await self.push_frame(AuditEventFrame(kind="interaction.decision", data=data))

    # -- input verdict --------------------------------------------------------------------------------

    def _speech_started(self) -> None:
        if self._open is None:
            self._open = _Utterance()
            self._unresolved.append(self._open)
        else:
            self._open.stopped = None  # the same turn goes on

    async def _resolve(self, outcome: Literal["approved", "refused", "held-back", "no-verdict"],
                       utterance: _Utterance | None = None) -> None:
        """The verdict on ``utterance`` (default: the oldest one waiting; verdicts come in turn order)."""
        if utterance is None and self._unresolved:
            utterance = self._unresolved[0]
        if utterance is not None:
            self._unresolved.remove(utterance)
            if utterance is self._open:
                self._open = None
        if outcome in ("refused", "held-back"):
            self._refused = (time.monotonic(), "input-refused" if outcome == "refused" else "held-back")
        reply = self._reply if self._reply is not None else (self._pending_end[0] if self._pending_end else None)
        if reply is None or reply.held is None:
            return
        if outcome == "approved" and self._unresolved:
            return  # the reply may answer speech still being checked: it stays held until that has its verdict
        held, reply.held = reply.held, None
        if outcome == "approved":
            for frame in held:
                await self.push_frame(frame)
        else:
            # nothing of it was pushed
            reply.withheld = {"refused": "input-refused", "held-back": "held-back"}.get(outcome, "no-verdict")
        if self._pending_end is not None and self._pending_end[0] is reply:
            _, cut = self._pending_end
            self._pending_end = None
            await self._audit_reply(reply, cut)

    async def _verdict_watch(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            late = next((u for u in self._unresolved
                         if u.stopped is not None and now - u.stopped > self._cfg.verdict_wait_secs), None)
            if late is not None:
                await self._resolve("no-verdict", late)
