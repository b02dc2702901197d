"""The realtime stage: one pipecat processor between the VAD and the output transport.

Upstream of it the microphone audio (16 kHz) and the local Silero VAD frames; downstream it emits exactly the
frames the cascade emits, so turn tracking, the recorder, the audit log and the assistant context aggregator
work unchanged:

* ``TranscriptionFrame`` for the user's transcript (the server's input transcription); with transcript hooks
  (``SessionHooks.on_transcript``) followed by a ``UserTurnTranscribedFrame``, and the turn is answered only if
  the transcript reaches the ``TranscriptReceipt`` after the hooks (see docs/realtime.md);
* ``ModerationVerdictFrame`` (input), then ``InputRefusedFrame`` and the refusal, or ``LLMFullResponseStartFrame``;
* ``LLMTextFrame`` per transcript delta of the model's answer (not spoken, not written to the context);
* per checked chunk a ``ModerationVerdictFrame`` (output) and a ``BotSentenceFrame`` (spoken / blocked / dropped);
* the released audio as 24 kHz ``TTSAudioRawFrame`` between ``TTSStartedFrame`` and ``TTSStoppedFrame``, and a
  ``TTSTextFrame`` per released chunk, queued behind its audio (so the transport reports it played);
* a ``TurnTimingFrame`` with the hold-back it added, then ``LLMFullResponseEndFrame``.

Everything that must stay in order with the audio goes through one outbox; in ``monitor`` mode the outbox only
lets audio run ``monitor_lead_ms`` ahead of the speaker, so a failing chunk can be cut. Turn-taking is the
server's VAD (``create_response: false``: voicebot sends ``response.create`` once the transcript passed input
moderation); barge-in is whichever VAD hears the user first while the bot speaks (the local one usually).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    LLMAssistantPushAggregationFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.utils.time import time_now_iso8601

from bot.audio import Resampler, pcm_to_int16, to_pcm
from bot.config import RealtimeConfig
from bot.frames import (BotSentenceFrame, InputRefusedFrame, ModerationVerdictFrame, TurnTimingFrame,
                        UserTurnTranscribedFrame)
from bot.persona import Persona
from bot.processors.transcript_receipt import TranscriptReceipt
from bot.realtime.client import RATE, RealtimeConnector, RealtimeLink, RealtimeRejected, RealtimeUnavailable
from bot.realtime.holdback import Chunk, HoldBack, Piece
from bot.realtime.playout import BYTES_PER_MS, PlayoutLedger, PlayoutMarkFrame, RecentOffsets
from bot.realtime.refusal import RefusalVoice, synthesize_pcm24k
from bot.text_split import TextSplitter
from bot.processors.moderation import check_text
from moderation import Moderator, StageConfig, Verdict

FRAME_BYTES = 40 * BYTES_PER_MS
"""Released audio is handed to the transport in 40 ms frames (marks and pacing have that granularity)."""
TICK_SECS = 0.02
HEALTHY_SECS = 60.0
"""A reconnected session that stays up this long gets its reconnection budget back."""
BENIGN_ERRORS = {"response_cancel_not_active"}
TRANSCRIPT_VERDICT_SECS = 30.0
"""How long a turn waits for the transcript processors (a policy may ask a model) before it goes unanswered."""
_FINALIZE = object()


@dataclass
class Gate:
    moderator: Moderator
    stage: StageConfig


@dataclass
class _Out:
    frame: Frame | None = None
    pcm: bytes = b""
    key: str = ""
    offset: int = 0
    """audio: byte offset of ``pcm`` in ``key``'s audio."""


@dataclass
class _Response:
    """One model response, from ``response.create`` to its end on our side."""

    n: int
    hb: HoldBack
    checks: asyncio.Queue = field(default_factory=asyncio.Queue)
    checker: asyncio.Task | None = None
    id: str | None = None
    item_id: str | None = None
    active: bool = True
    """The server is generating it (until response.done)."""
    cut: bool = False
    """Barge-in: everything further about it is ignored."""
    blocked: bool = False
    lagged: bool = False
    lost: bool = False
    finalized: bool = False
    tts_started: bool = False
    pending_text: str | None = None
    """The last chunk that passed, whose text is emitted once the audio after it is released (or at the end)."""
    unreleased: list[str] = field(default_factory=list)
    """Unordered transcript (Gemini): chunks that passed, emitted as spoken once all the audio is released."""
    text_chunks: int = 0

    @property
    def key(self) -> str:
        return self.item_id or f"response-{self.n}"

    @property
    def stopped(self) -> bool:
        return self.cut or self.blocked or self.lagged or self.lost


def _message_item(role: str, text: str) -> dict[str, Any]:
    """``conversation.item.create`` of a text message (user: input_text, assistant: output_text)."""
    part = {"type": "input_text" if role == "user" else "output_text", "text": text}
    return {"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": [part]}}


class RealtimeService(FrameProcessor):
    def __init__(self, *, cfg: RealtimeConfig, persona: Persona, connector: RealtimeConnector, context: LLMContext,
                 ledger: PlayoutLedger, refusal: RefusalVoice, piper_voice: str, input_gate: Gate | None,
                 output_gate: Gate | None, input_rate: int, transcript_receipt: TranscriptReceipt | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name="realtime", **kwargs)
        self._receipt = transcript_receipt
        self.cfg = cfg
        self.persona = persona
        self._connector = connector
        self._context = context
        self._ledger = ledger
        self._refusal = refusal
        self._piper_voice = piper_voice
        self._input = input_gate
        self._output = output_gate
        self._input_rate = input_rate
        self._resampler = Resampler(connector.input_rate)
        self._link: RealtimeLink | None = None
        self._tasks: list[asyncio.Task] = []
        self._turns: asyncio.Queue = asyncio.Queue()
        self._response: _Response | None = None
        self._playing: _Response | None = None
        """The last response with audio handed to the speaker (it may still be playing after it ended)."""
        self._awaiting_created: deque[_Response] = deque()
        self._ignored_ids: set[str] = set()
        self._outbox: deque[_Out] = deque()
        self._out_lock = asyncio.Lock()
        self._pushed = RecentOffsets()
        # Without output moderation there is nothing to hold audio back for: it plays as it arrives.
        self._holdback = cfg.holdback if output_gate is not None else "monitor"
        self._pace = self._holdback == "monitor" and output_gate is not None
        self._max_lead = int(cfg.monitor_lead_ms * BYTES_PER_MS)
        self._bot_speaking = False
        self._stopping = False
        self._counter = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._pending_creates: dict[str, _Response] = {}
        self._checkers: set[asyncio.Task] = set()
        self._untold: list[str] = []
        """Lines spoken locally while no connection was open, to tell the server once one is."""
        self.connections = 0

    # -- pipeline ---------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._send_audio(frame)
        elif isinstance(frame, TTSSpeakFrame):
            await self._speak_local(frame.text)  # the greeting: spoken locally, like the refusal
        else:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot_speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._bot_speaking = False
            await self.push_frame(frame, direction)
            if isinstance(frame, VADUserStartedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
                await self._barge_in("local VAD")

    async def _start(self) -> None:
        for gate in (self._input, self._output):
            if gate is not None:
                self._tasks.append(self.create_task(gate.moderator.warmup(), name="realtime-warmup"))
        self._tasks.append(self.create_task(self._connection_loop(), name="realtime-connection"))
        self._tasks.append(self.create_task(self._turn_loop(), name="realtime-turns"))
        self._tasks.append(self.create_task(self._tick_loop(), name="realtime-tick"))

    async def _stop(self) -> None:
        self._stopping = True
        for task in list(self._checkers) + self._tasks:
            await self.cancel_task(task)
        self._tasks.clear()
        self._checkers.clear()
        if self._link is not None:
            await self._link.close()
            self._link = None

    # -- connection -------------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        attempts = 0
        healthy_since = 0.0
        while not self._stopping:
            try:
                link = await self._connector.open()
            except RealtimeRejected as exc:
                await self._fatal(str(exc))
                return
            except RealtimeUnavailable as exc:
                if self.connections == 0:
                    await self._fatal(str(exc))  # never connected: the configuration is wrong or the server is down
                    return
                attempts += 1
                if attempts > self.cfg.max_reconnects:
                    await self._fatal(f"{exc}; gave up after {self.cfg.max_reconnects} reconnection attempts")
                    return
                await asyncio.sleep(min(0.25 * 2 ** (attempts - 1), 4.0))
                continue
            self.connections += 1
            self._link = link
            await self._replay_history(link)  # a greeting already spoken, or everything before a reconnect
            if self.connections > 1:
                logger.info(f"realtime: reconnected to {link.where} (connection {self.connections})")
            healthy_since = time.monotonic()
            reason = await self._receive(link)
            self._link = None
            await link.close()
            if self._stopping:
                return
            if time.monotonic() - healthy_since > HEALTHY_SECS:
                attempts = 0
            attempts += 1
            retry = attempts <= self.cfg.max_reconnects
            await self._on_link_lost(reason, attempts if retry else None)
            if not retry:
                await self._fatal(f"realtime connection to {link.where} dropped ({reason}) and reconnecting is "
                                  f"not allowed (realtime.max_reconnects = 0)" if self.cfg.max_reconnects == 0 else
                                  f"realtime connection to {link.where} dropped ({reason}); gave up after "
                                  f"{self.cfg.max_reconnects} reconnection attempts")
                return
            await asyncio.sleep(min(0.25 * 2 ** (attempts - 1), 4.0))

    async def _receive(self, link: RealtimeLink) -> str:
        """Handle server events until the connection ends; returns why it ended."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                event = await link.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                return f"websocket closed, code {code}"
            except (OSError, EOFError) as exc:
                return str(exc) or type(exc).__name__
            try:
                await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a malformed event must not take the session down
                logger.exception(f"realtime: error handling {getattr(event, 'type', event)!r}: {exc}")

    async def _replay_history(self, link: RealtimeLink) -> None:
        """A new connection is a new server session: give it the conversation so far, as text (and lines
        spoken locally while there was no connection, such as the greeting)."""
        said = []
        for message in self._context.get_messages():
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if role not in ("user", "assistant") or not isinstance(content, str) or not content.strip():
                continue
            said.append(content)
            await self._send(_message_item(role, content), link=link)
        untold, self._untold = self._untold, []
        for text in untold:
            if text not in said:
                await self._send(_message_item("assistant", text), link=link)

    async def _send(self, event: dict[str, Any], *, link: RealtimeLink | None = None) -> bool:
        link = link or self._link
        if link is None:
            return False
        event.setdefault("event_id", f"vb_{next(self._event_ids)}")
        try:
            await link.send(event)
            return True
        except Exception as exc:  # the receive loop notices the broken connection and reconnects
            logger.warning(f"realtime: could not send {event.get('type')}: {type(exc).__name__}: {exc}")
            return False

    async def _send_audio(self, frame: InputAudioRawFrame) -> None:
        if self._link is None:
            return  # not connected (yet, or reconnecting): this audio is not heard
        samples = self._resampler.process(pcm_to_int16(frame.audio, frame.num_channels), frame.sample_rate)
        if len(samples):
            try:
                await self._link.append_audio(to_pcm(samples))
            except Exception as exc:
                logger.debug(f"realtime: audio not sent ({type(exc).__name__})")

    async def _fatal(self, message: str) -> None:
        """A problem the session cannot continue with: report it in one line and end the session cleanly."""
        if self._stopping:
            return
        self._stopping = True
        logger.error(f"realtime: {message}")
        await self.push_error(message)
        r = self._response
        if r is not None and not r.finalized:
            r.lost = True
            r.hb.drop()
            await self._finalize(r)
        await self._enqueue(EndWorkerFrame(reason=message))

    async def _on_link_lost(self, reason: str, attempt: int | None) -> None:
        """The connection broke: what was not yet released of the answer in progress is lost."""
        r = self._response
        if attempt is not None:  # (when giving up, _fatal reports it in one line)
            message = (f"realtime connection to {self._connector.where} dropped ({reason}): reconnecting "
                       f"(attempt {attempt} of {self.cfg.max_reconnects})")
            if r is not None and not r.finalized:
                message += "; the answer in progress is lost"
            logger.warning(f"realtime: {message}")
            await self.push_error(message)
        if r is not None and not r.finalized:
            r.active = False
            r.lost = True
            r.hb.drop()  # what was not released is never played: nothing checks it any more
            for chunk in r.hb.finish_text(time.monotonic()):
                r.checks.put_nowait(chunk)
            r.checks.put_nowait(_FINALIZE)
        self._awaiting_created.clear()
        self._pending_creates.clear()

    # -- server events ----------------------------------------------------------------------------

    def _for(self, response_id: str | None) -> _Response | None:
        """The live response a server event is about (None for a cut or unknown one)."""
        if response_id and response_id in self._ignored_ids:
            return None
        r = self._response
        if r is None or r.finalized or r.cut:
            return None
        if r.id is None and response_id:
            r.id = response_id
        return r if (r.id == response_id or not response_id) else None

    async def _on_event(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        now = time.monotonic()
        if kind == "response.output_audio.delta":
            r = self._for(event.response_id)
            if r is not None:
                if r.item_id is None:
                    r.item_id = event.item_id
                await self._on_audio(r, base64.b64decode(event.delta), now)
        elif kind == "response.output_audio_transcript.delta":
            r = self._for(event.response_id)
            if r is not None:
                await self._on_text(r, event.delta, now)
        elif kind == "response.created":
            rid = getattr(event.response, "id", None)
            if self._awaiting_created:
                r = self._awaiting_created.popleft()
                r.id = rid
                self._pending_creates = {k: v for k, v in self._pending_creates.items() if v is not r}
                if r.cut and rid:
                    self._ignored_ids.add(rid)
            elif rid:
                # Not ours (create_response is off): say nothing we did not ask for.
                logger.warning(f"realtime: server started response {rid} on its own: cancelling it")
                self._ignored_ids.add(rid)
                await self._send({"type": "response.cancel", "response_id": rid})
        elif kind == "response.output_item.added":
            r = self._for(event.response_id)
            item = event.item
            if r is not None and getattr(item, "type", None) == "message" and r.item_id is None:
                r.item_id = item.id
        elif kind == "response.output_audio_transcript.done":
            r = self._for(event.response_id)
            if r is not None:
                await self._finish_text(r, now)
        elif kind == "response.done":
            await self._on_response_done(event.response, now)
        elif kind == "input_audio_buffer.speech_started":
            await self._barge_in("server VAD")
        elif kind == "input_audio_buffer.committed":
            if self._input is None and self._receipt is None:
                await self._turns.put(("committed", event.item_id, ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            await self._turns.put(("transcript", event.item_id, event.transcript or ""))
        elif kind == "conversation.item.input_audio_transcription.failed":
            error = getattr(event, "error", None)
            await self._turns.put(("failed", event.item_id, getattr(error, "message", None) or "unknown error"))
        elif kind == "error":
            await self._on_server_error(event.error)
        elif kind == "session.updated":
            pass  # a later configuration change: nothing sent by voicebot after the first one
        else:
            logger.trace(f"realtime: {kind}")

    async def _on_server_error(self, error: Any) -> None:
        code = getattr(error, "code", None) or ""
        message = getattr(error, "message", None) or "error"
        if code in BENIGN_ERRORS:
            logger.debug(f"realtime: server: {message} [{code}]")
            return
        r = self._pending_creates.pop(getattr(error, "event_id", None) or "", None)
        text = f"realtime server error: {message}" + (f" [{code}]" if code else "")
        await self.push_error(text)
        if r is not None and not r.finalized and r.id is None:
            # our response.create was refused: there will be no response.done for it
            with contextlib.suppress(ValueError):
                self._awaiting_created.remove(r)
            r.active = False
            r.checks.put_nowait(_FINALIZE)

    async def _on_response_done(self, response: Any, now: float) -> None:
        rid = getattr(response, "id", None)
        r = self._for(rid)
        if r is None:
            if rid:
                self._ignored_ids.discard(rid)
            return
        r.active = False
        status = getattr(response, "status", None)
        if status == "failed":
            details = getattr(response, "status_details", None)
            err = getattr(details, "error", None)
            reason = getattr(err, "message", None) or getattr(err, "code", None) or "no details"
            await self.push_error(f"realtime response failed: {reason}")
        await self._finish_text(r, now)
        r.checks.put_nowait(_FINALIZE)

    # -- user turns -------------------------------------------------------------------------------

    async def _turn_loop(self) -> None:
        while True:
            kind, item_id, text = await self._turns.get()
            try:
                await self._user_turn(kind, item_id, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception(f"realtime: user turn failed: {exc}")
                await self.push_error(f"realtime: user turn failed: {type(exc).__name__}: {exc}")

    async def _user_turn(self, kind: str, item_id: str, text: str) -> None:
        text = text.strip()
        if kind == "committed":  # input moderation is off: answer at once, the transcript follows
            await self._start_response()
            return
        if kind == "failed":
            await self.push_error(f"realtime input transcription failed: {text}")
            if self._input is not None:  # nothing to check: fail closed, like a failing moderator
                verdict = Verdict(allowed=False, action=self._input.stage.action, categories=["backend_error"],
                                  reason=f"no transcript to check ({text}); failing closed")
                await self.push_frame(ModerationVerdictFrame(stage="input", text="", verdict=verdict.to_dict()))
                if self._input.stage.action == "refuse":
                    await self._refuse_input(item_id, "")
                    return
                await self._start_response()
            return
        if self._receipt is not None:
            if not await self._let_through(item_id, text):
                # Held back by a transcript processor (e.g. Discord's reply gate): the model neither answers
                # nor remembers it, as in the cascade, where such a transcript never reaches the LLM.
                await self._send({"type": "conversation.item.delete", "item_id": item_id})
                return
        elif text:
            await self.push_frame(TranscriptionFrame(text=text, user_id="user", timestamp=time_now_iso8601()))
        if self._input is None:
            if text:
                self._context.add_message({"role": "user", "content": text})
                if self._receipt is not None:  # the response waited for the verdict (not started at commit)
                    await self._start_response()
            return
        if not text:  # noise the server took for speech: nothing to answer
            await self._send({"type": "conversation.item.delete", "item_id": item_id})
            return
        verdict = await check_text(self._input.moderator, text, "user", self.persona)
        await self.push_frame(ModerationVerdictFrame(stage="input", text=text, verdict=verdict.to_dict()))
        if not verdict.allowed and self._input.stage.action == "refuse":
            await self._refuse_input(item_id, text)
            return
        self._context.add_message({"role": "user", "content": text})
        await self._start_response()

    async def _let_through(self, item_id: str, text: str) -> bool:
        """Send the transcript through the transcript processors; True if it came out at the receipt."""
        assert self._receipt is not None
        if not text:
            return False
        verdict = self._receipt.expect(item_id)
        frame = TranscriptionFrame(text=text, user_id="user", timestamp=time_now_iso8601())
        frame.interruptible = False  # a barge-in must not lose a turn's transcript between here and the receipt
        await self.push_frame(frame)
        await self.push_frame(UserTurnTranscribedFrame(item_id=item_id))
        try:
            return await asyncio.wait_for(verdict, timeout=TRANSCRIPT_VERDICT_SECS)
        except TimeoutError:
            self._receipt.forget(item_id)
            await self.push_error(f"realtime: the transcript processors gave no verdict on a turn within "
                                  f"{TRANSCRIPT_VERDICT_SECS:g} s: it is not answered")
            return False

    async def _refuse_input(self, item_id: str, text: str) -> None:
        """The model never answers this turn: its item is deleted from the server's conversation and the
        refusal is spoken instead."""
        refusal = self.persona.refusal
        await self.push_frame(InputRefusedFrame(text=text, refusal=refusal))
        await self._send({"type": "conversation.item.delete", "item_id": item_id})
        await self._tell_server_said(refusal)
        await self._speak_local(refusal, pcm=self._refusal.pcm)

    async def _tell_server_said(self, text: str) -> None:
        """Put a line the bot spoke locally into the server's conversation, so the model knows it was said."""
        if not await self._send(_message_item("assistant", text)):
            self._untold.append(text)

    async def _speak_local(self, text: str, pcm: bytes | None = None) -> None:
        """Speak a line outside any model response (the greeting, an input refusal) with Piper."""
        if pcm is None:
            pcm = await asyncio.to_thread(synthesize_pcm24k, text, self._piper_voice)
            await self._tell_server_said(text)
        key = f"local-{next(self._counter)}"
        await self._enqueue(TTSStartedFrame())
        self._queue_audio(key, 0, pcm)
        await self._enqueue(TTSTextFrame(text, text_type=TextType.SENTENCE), TTSStoppedFrame(),
                            LLMAssistantPushAggregationFrame())

    # -- responses --------------------------------------------------------------------------------

    async def _start_response(self) -> None:
        old = self._response
        if old is not None and not old.finalized:
            await self._barge_in("new turn", force=True)
        if self._link is None:
            await self.push_error("realtime: not connected, the turn could not be answered")
            return
        chunker = TextSplitter(self.cfg.chunk, max_words=self.cfg.max_chunk_words)
        r = _Response(n=next(self._counter),
                      hb=HoldBack(self._holdback, max_lag=self.cfg.max_lag_ms / 1000.0, chunker=chunker,
                                  ordered=self._connector.transcript_ordered))
        self._response = r
        self._awaiting_created.append(r)
        r.checker = self.create_task(self._check_loop(r), name=f"realtime-check-{r.n}")
        self._checkers.add(r.checker)
        r.checker.add_done_callback(self._checkers.discard)
        await self._enqueue(LLMFullResponseStartFrame())
        event_id = f"vb_response_{r.n}"
        self._pending_creates[event_id] = r
        if not await self._send({"type": "response.create", "event_id": event_id}):
            self._awaiting_created.remove(r)
            r.active = False
            r.checks.put_nowait(_FINALIZE)

    async def _on_text(self, r: _Response, delta: str, now: float) -> None:
        frame = LLMTextFrame(delta)
        frame.skip_tts = True  # the model speaks it; nothing here synthesizes text
        frame.append_to_context = False  # the context gets what was played (TTSTextFrame), not this
        await self.push_frame(frame)
        self._check_later(r, r.hb.add_text(delta, now))

    async def _finish_text(self, r: _Response, now: float) -> None:
        """The transcript is complete: check what is left; if all of it has passed, release the rest."""
        self._check_later(r, r.hb.finish_text(now))
        if not r.stopped:
            await self._play(r, r.hb.release(now))
            await self._emit_unreleased(r)

    async def _emit_unreleased(self, r: _Response) -> None:
        """Unordered transcript: the texts of the passed chunks go out behind the audio, once it is all released."""
        if r.unreleased and r.hb.all_clear:
            texts, r.unreleased = r.unreleased, []
            await self._enqueue(*(self._text(t) for t in texts))

    def _check_later(self, r: _Response, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            r.text_chunks += 1
            r.checks.put_nowait(chunk)

    async def _on_audio(self, r: _Response, pcm: bytes, now: float) -> None:
        if r.stopped:
            return
        if not r.tts_started:
            r.tts_started = True
            await self._enqueue(TTSStartedFrame())
        await self._play(r, r.hb.add_audio(pcm, now))

    async def _play(self, r: _Response, pieces: list[Piece]) -> None:
        for piece in pieces:
            self._queue_audio(r.key, piece.offset, piece.pcm)
        if pieces:
            self._playing = r
            await self._drain()

    async def _check_loop(self, r: _Response) -> None:
        while True:
            item = await r.checks.get()
            if item is _FINALIZE:
                await self._finalize(r)
                return
            chunk: Chunk = item
            if r.stopped:
                await self.push_frame(BotSentenceFrame(index=chunk.index, text=chunk.text, fate="dropped"))
                continue
            if self._output is None:
                await self._passed(r, chunk)
                continue
            verdict = await check_text(self._output.moderator, chunk.text, "bot", self.persona)
            if r.cut:
                return
            record = verdict.to_dict()
            record["holdback"] = self._holdback
            await self.push_frame(ModerationVerdictFrame(stage="output", text=chunk.text, verdict=record,
                                                         index=chunk.index))
            if verdict.allowed or self._output.stage.action != "refuse":
                await self.push_frame(BotSentenceFrame(index=chunk.index, text=chunk.text, fate="spoken"))
                await self._passed(r, chunk)
            else:
                await self._block(r, chunk)

    async def _passed(self, r: _Response, chunk: Chunk) -> None:
        if not r.hb.ordered:  # no audio is released before the whole transcript passed
            r.unreleased.append(chunk.text)
            await self._play(r, r.hb.passed(chunk, time.monotonic()))
            await self._emit_unreleased(r)
            return
        if r.pending_text is not None:
            await self._enqueue(self._text(r.pending_text))
        r.pending_text = chunk.text
        await self._play(r, r.hb.passed(chunk, time.monotonic()))

    async def _block(self, r: _Response, chunk: Chunk) -> None:
        """A chunk failed: drop what is held, stop the model, and say the refusal instead."""
        refusal = self.persona.refusal
        r.blocked = True
        await self.push_frame(BotSentenceFrame(index=chunk.index, text=chunk.text, fate="blocked",
                                               spoken_instead=refusal))
        r.hb.blocked()
        r.unreleased.clear()  # unordered: none of their audio was released
        async with self._out_lock:  # monitor: what has not reached the speaker yet is cut
            self._outbox = deque(o for o in self._outbox if o.key != r.key)
        if r.pending_text is not None:
            await self._enqueue(self._text(r.pending_text))
            r.pending_text = None
        await self._stop_server_response(r, self._pushed.get(r.key) // BYTES_PER_MS)
        await self._tell_server_said(refusal)
        if not r.tts_started:
            r.tts_started = True
            await self._enqueue(TTSStartedFrame())
        self._queue_audio(f"refusal-{r.n}", 0, self._refusal.pcm)
        await self._enqueue(self._text(refusal))

    async def _stop_server_response(self, r: _Response, audio_end_ms: int) -> None:
        """Cancel the response if the server is still generating it, and truncate its item at what the user
        heard (or will hear), so the model's memory of the conversation matches the speaker's."""
        if r.active:
            r.active = False
            await self._send({"type": "response.cancel", **({"response_id": r.id} if r.id else {})})
        if r.item_id and r.hb.received_bytes:
            end = min(audio_end_ms, r.hb.received_bytes // BYTES_PER_MS)
            await self._send({"type": "conversation.item.truncate", "item_id": r.item_id, "content_index": 0,
                              "audio_end_ms": int(end)})

    async def _finalize(self, r: _Response) -> None:
        """The response ended (done, failed, lost, or the session ends): close it on our side."""
        if r.finalized or r.cut:
            return
        r.finalized = True
        held = r.hb.held_bytes
        if held and not r.stopped:
            # Strict, and no checked transcript covers this audio (e.g. the response had no transcript).
            r.hb.drop()
            await self.push_error(f"hold-back: {held // BYTES_PER_MS} ms of model audio had no checked transcript "
                                  "covering it and was not played")
            await self._stop_server_response(r, self._pushed.get(r.key) // BYTES_PER_MS)
        if r.pending_text is not None:
            await self._enqueue(self._text(r.pending_text))
            r.pending_text = None
        await self._emit_unreleased(r)
        r.unreleased.clear()
        if r.tts_started:
            await self._enqueue(TTSStoppedFrame())
        await self.push_frame(TurnTimingFrame(timings=r.hb.stats.timings_ms()))
        await self._enqueue(LLMFullResponseEndFrame())
        if self._response is r:
            self._response = None

    async def _barge_in(self, source: str, *, force: bool = False) -> None:
        """The user talks over the bot: stop playback, cancel the response, truncate at the ms played."""
        r = self._response
        live = r is not None and not r.finalized
        playing = self._bot_speaking or any(o.pcm for o in self._outbox)
        if not force and not playing and not (live and r.hb.received_bytes):
            return  # nothing to interrupt (a response still thinking silently is left to finish)
        if not live and not playing:
            return
        logger.info(f"realtime: barge-in ({source})")
        if live:
            assert r is not None
            r.cut = True
            r.hb.drop()
            if r.id:
                self._ignored_ids.add(r.id)
            if r.checker is not None and r.checker is not asyncio.current_task():
                await self.cancel_task(r.checker)
            # The answer ends before the interruption, so turn tracking closes the right turn.
            await self.push_frame(TurnTimingFrame(timings=r.hb.stats.timings_ms()))
            await self.push_frame(LLMFullResponseEndFrame())
            self._response = None
        async with self._out_lock:
            self._outbox.clear()
        await self.broadcast_interruption()
        target = r if live else self._playing
        if target is not None:
            played = self._ledger.played_ms(target.key)
            if live:
                await self._stop_server_response(target, played)
            elif target.item_id and played < self._pushed.get(target.key) // BYTES_PER_MS:
                await self._stop_server_response(target, played)
        self._playing = None

    # -- lag and pacing ---------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECS)
            r = self._response
            if r is not None and not r.stopped and not r.finalized:
                waited = r.hb.lagging(time.monotonic())
                if waited is not None:
                    await self._lag_cut(r, waited)
            if self._outbox:
                await self._drain()

    async def _lag_cut(self, r: _Response, waited: float) -> None:
        r.lagged = True
        dropped = r.hb.drop()
        await self.push_error(f"hold-back: model audio came with no transcript for {waited * 1000:.0f} ms "
                              f"(realtime.max_lag_ms = {self.cfg.max_lag_ms:g}): {dropped // BYTES_PER_MS} ms of "
                              "audio dropped unplayed and the response cancelled")
        await self._stop_server_response(r, self._pushed.get(r.key) // BYTES_PER_MS)

    # -- outbox -----------------------------------------------------------------------------------

    def _text(self, text: str) -> TTSTextFrame:
        return TTSTextFrame(text, text_type=TextType.SENTENCE)

    def _queue_audio(self, key: str, offset: int, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME_BYTES):
            self._outbox.append(_Out(pcm=pcm[i:i + FRAME_BYTES], key=key, offset=offset + i))

    async def _enqueue(self, *frames: Frame) -> None:
        for frame in frames:
            self._outbox.append(_Out(frame=frame))
        await self._drain()

    async def _drain(self) -> None:
        async with self._out_lock:
            while self._outbox:
                out = self._outbox[0]
                if out.pcm and self._pace:
                    ahead = out.offset - self._ledger.played_bytes(out.key)
                    if ahead > self._max_lead:
                        break
                self._outbox.popleft()
                if out.frame is not None:
                    await self.push_frame(out.frame)
                    continue
                await self.push_frame(TTSAudioRawFrame(audio=out.pcm, sample_rate=RATE, num_channels=1))
                end = out.offset + len(out.pcm)
                self._pushed.raise_to(out.key, end)
                await self.push_frame(PlayoutMarkFrame(key=out.key, offset=end))
