"""``realtime.provider = "gemini"``: Gemini's Live API through the ``google-genai`` package, behind the same
:class:`~bot.realtime.service.RealtimeService` (moderated hold-back, barge-in, refusal) as OpenAI's Realtime API.

:class:`GeminiConnector` opens a Live session (``client.aio.live.connect``) configured from the persona: audio
out (24 kHz PCM) in the persona's voice, 16 kHz PCM in, input and output audio transcription on, the server's
automatic activity detection deciding when the user is done. :class:`GeminiLink` then translates between the
Live API's messages and the Realtime API events the service speaks (each built and validated with the
``openai`` package's own event types), so the hold-back, moderation and audit logic exists once:

==============================================  ===============================================================
Live API (server -> us)                         event given to the service
==============================================  ===============================================================
``input_transcription`` pieces                  collected; at the first model output of the turn:
                                                ``input_audio_buffer.committed`` and
                                                ``conversation.item.input_audio_transcription.completed``
``model_turn`` audio (24 kHz), ``output_``      held until the service asks for the answer (``response.create``,
``transcription`` pieces                        i.e. the user's transcript passed input moderation), then
                                                ``response.created`` and ``response.output_audio.delta`` /
                                                ``response.output_audio_transcript.delta`` in arrival order
``turn_complete``                               ``response.output_audio_transcript.done``, ``response.done``
``interrupted`` (the server heard the user)     ``input_audio_buffer.speech_started`` (barge-in)
==============================================  ===============================================================

and from the service: ``response.create`` releases the held answer; ``conversation.item.delete`` of the user's
turn (input refused) and ``response.cancel`` (output blocked, lag, barge-in) drop the rest of the model's
turn unplayed (the Live API has no cancel: the server finishes generating, nothing of it is played);
``conversation.item.create`` becomes ``client_content`` without ``turn_complete`` (adds to the model's
context without asking for an answer); ``conversation.item.truncate`` has no Live API equivalent (the model
keeps its whole answer in its context).

**Ordering.** Gemini's output transcription is not ordered with its audio, so the hold-back runs with
``ordered=False``: audio is released once the whole transcript of the answer has passed moderation
(strict), or plays at once and is cut on a failing chunk (monitor). See docs/realtime.md for the cost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
from typing import Any

from loguru import logger
from pydantic import TypeAdapter

from bot.config import RealtimeConfig
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.realtime.client import RealtimeRejected, RealtimeUnavailable, explain_connect

INPUT_RATE = 16000
OUTPUT_RATE = 24000
INPUT_MIME = f"audio/pcm;rate={INPUT_RATE}"
DEFAULT_VOICE = "Puck"
GOOGLE = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"


class LinkClosed(EOFError):
    """The Live API connection ended (the message says how)."""


def _genai():
    try:
        from google import genai
        from google.genai import types
    except ImportError:
        raise VoicebotError("realtime.provider is 'gemini' but the google-genai package is not installed: "
                            "run `make setup` (or `pip install google-genai`)") from None
    return genai, types


def gemini_voice(cfg: RealtimeConfig, persona: Persona) -> str:
    return cfg.voice or persona.voices.get("gemini", "") or DEFAULT_VOICE


def live_config(cfg: RealtimeConfig, persona: Persona) -> Any:
    """The ``LiveConnectConfig`` voicebot opens sessions with."""
    _, types = _genai()
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        system_instruction=types.Content(parts=[types.Part(text=persona.instructions)]),
        speech_config=types.SpeechConfig(voice_config=types.VoiceConfig(
            prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=gemini_voice(cfg, persona)))),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False, prefix_padding_ms=cfg.prefix_padding_ms, silence_duration_ms=cfg.silence_duration_ms),
            activity_handling=types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS),
    )


def resolve_gemini_key(cfg: RealtimeConfig) -> str:
    key = os.environ.get(cfg.api_key_env, "")
    if key:
        return key
    if cfg.base_url:
        return "not-needed"  # a local Live API server
    raise VoicebotError(f"realtime.provider is 'gemini' but ${cfg.api_key_env} is not set: export your Gemini "
                        "API key in that variable, or set realtime.base_url to a compatible server")


class GeminiConnector:
    """Opens Live API sessions for one persona (the counterpart of :class:`~bot.realtime.client.RealtimeConnector`)."""

    input_rate = INPUT_RATE
    transcript_ordered = False

    def __init__(self, cfg: RealtimeConfig, persona: Persona) -> None:
        genai, types = _genai()
        self.cfg = cfg
        self.persona = persona
        base = (cfg.base_url or GOOGLE).rstrip("/")
        if not base.startswith("https://"):
            raise VoicebotError(f"realtime.base_url {cfg.base_url!r} is not an https URL: the Live API is reached "
                                "over TLS (google-genai always connects with wss://); use https://host:port")
        self.where = (f"wss://{base[len('https://'):]}/ws/google.ai.generativelanguage.{API_VERSION}."
                      "GenerativeService.BidiGenerateContent")
        self.config = live_config(cfg, persona)
        http_options = types.HttpOptions(base_url=cfg.base_url, api_version=API_VERSION) if cfg.base_url \
            else types.HttpOptions(api_version=API_VERSION)
        self._client = genai.Client(api_key=resolve_gemini_key(cfg), http_options=http_options)

    async def open(self) -> GeminiLink:
        """Connect and set the session up; raises RealtimeUnavailable or RealtimeRejected."""
        from google.genai import errors

        await asyncio.to_thread(_event_types)  # building the event validator takes a while: not on the audio path
        manager = self._client.aio.live.connect(model=self.cfg.model, config=self.config)
        try:
            session = await asyncio.wait_for(manager.__aenter__(), timeout=self.cfg.connect_timeout_secs)
        except asyncio.CancelledError:
            raise
        except errors.APIError as exc:  # the server closed the socket in answer to the setup
            raise RealtimeRejected(f"Gemini Live server {self.where} refused the session setup: "
                                   f"{exc.code} {exc.message or exc.status or ''}".rstrip()) from None
        except BaseException as exc:
            raise explain_connect(exc, self.where, self.cfg) from None
        if session.setup_complete is None:
            with contextlib.suppress(Exception):
                await manager.__aexit__(None, None, None)
            raise RealtimeRejected(f"Gemini Live server {self.where} did not confirm the session setup "
                                   "(no setupComplete)")
        return GeminiLink(manager, session, self.where)


_EVENTS: TypeAdapter | None = None


def _event_types() -> TypeAdapter:
    global _EVENTS
    if _EVENTS is None:
        from openai.types.realtime import RealtimeServerEvent

        _EVENTS = TypeAdapter(RealtimeServerEvent)
    return _EVENTS


def _event(data: dict[str, Any]) -> Any:
    """A Realtime API server event, validated with the openai package's own types."""
    return _event_types().validate_python(data)


class _Turn:
    """One model turn of the Live API, as the service sees it (one response)."""

    def __init__(self, n: int, user_item: str) -> None:
        self.n = n
        self.user_item = user_item
        self.response_id = f"gemini-response-{n}"
        self.item_id = f"gemini-output-{n}"
        self.state = "held"
        """held (until response.create), live, dropped (input refused, cancelled, interrupted)."""
        self.held: list[dict[str, Any]] = []
        self.transcript = ""
        self.complete = False
        self.released = False
        """response.created was given to the service: it waits for a response.done."""
        self.interrupted = False
        """The user spoke over it: input transcription from now on is the next user turn's."""


class GeminiLink:
    """One open Live API session, speaking Realtime API events to :class:`RealtimeService`."""

    def __init__(self, manager: Any, session: Any, where: str) -> None:
        self._manager = manager
        self._session = session
        self.where = where
        self.closed = False
        self._events: asyncio.Queue = asyncio.Queue()
        self._ids = itertools.count(1)
        self._turns = itertools.count(1)
        self._heard: list[str] = []
        """Input transcription of the user's current turn."""
        self._turn: _Turn | None = None
        self._pump = asyncio.create_task(self._receive_loop(), name="gemini-live-receive")

    # -- the service's side ----------------------------------------------------------------------

    async def recv(self) -> Any:
        item = await self._events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def append_audio(self, pcm: bytes) -> None:
        _, types = _genai()
        await self._session.send_realtime_input(audio=types.Blob(data=pcm, mime_type=INPUT_MIME))

    async def send(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        turn = self._turn
        if kind == "response.create":
            if turn is not None and turn.state == "held":
                self._release(turn)
        elif kind == "response.cancel":
            # No cancel in the Live API: the rest of the model's turn is dropped here, and the response ends
            # (response.done, cancelled) when the server's turn does.
            if turn is not None and turn.state != "dropped" and not turn.complete:
                turn.state = "dropped"
                turn.held.clear()
        elif kind == "conversation.item.delete":
            if turn is not None and turn.user_item == event.get("item_id"):
                turn.state = "dropped"  # the user's turn was refused: nothing of the answer is given out
                turn.held.clear()
        elif kind == "conversation.item.create":
            await self._tell(event.get("item") or {})
        elif kind == "conversation.item.truncate":
            logger.debug("gemini: the Live API cannot truncate the model's turn; its context keeps all of it")
        else:
            logger.debug(f"gemini: {kind} has no Live API equivalent; ignored")

    async def _tell(self, item: dict[str, Any]) -> None:
        """A message into the model's context, without asking for an answer."""
        _, types = _genai()
        text = " ".join(str(part.get("text", "")) for part in item.get("content") or [] if isinstance(part, dict))
        if not text.strip():
            return
        role = "model" if item.get("role") == "assistant" else "user"
        await self._session.send_client_content(turns=types.Content(role=role, parts=[types.Part(text=text)]),
                                                turn_complete=False)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pump.cancel()
        with contextlib.suppress(BaseException):
            await self._pump
        try:
            await asyncio.wait_for(self._manager.__aexit__(None, None, None), timeout=2.0)
        except Exception as exc:
            logger.debug(f"gemini: closing {self.where}: {type(exc).__name__}: {exc}")

    # -- the server's side -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        from google.genai import errors

        try:
            while True:
                async for message in self._session.receive():  # one model turn per iteration
                    self._on_message(message)
        except asyncio.CancelledError:
            raise
        except errors.APIError as exc:
            self._events.put_nowait(LinkClosed(f"websocket closed, code {exc.code}"
                                               + (f": {exc.message}" if exc.message else "")))
        except Exception as exc:  # a broken message or socket: the service reconnects
            self._events.put_nowait(LinkClosed(f"{type(exc).__name__}: {exc}"))

    def _emit(self, data: dict[str, Any]) -> None:
        self._events.put_nowait(_event({"event_id": f"gemini_{next(self._ids)}", **data}))

    def _on_message(self, message: Any) -> None:
        content = message.server_content
        if message.go_away is not None:
            logger.warning(f"gemini: the server will close the session soon (time left {message.go_away.time_left})")
        if content is None:
            return
        if content.input_transcription is not None and content.input_transcription.text:
            turn = self._turn
            if turn is not None and not turn.complete and not turn.interrupted:
                # the rest of a user turn whose transcript was already handed over: not part of the checked
                # text (the model may have heard it); not carried into the next turn either
                logger.debug(f"gemini: input transcription after the answer started, not checked: "
                             f"{content.input_transcription.text!r}")
            else:
                self._heard.append(content.input_transcription.text)
        if content.interrupted:
            if self._turn is not None:
                self._turn.interrupted = True
            self._emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                        "item_id": f"gemini-input-{self._turn.n + 1 if self._turn else 1}"})
            if self._turn is not None and self._turn.state != "dropped":
                self._turn.state = "dropped"
                self._turn.held.clear()
        audio = []
        if content.model_turn is not None:
            for part in content.model_turn.parts or []:
                blob = part.inline_data
                if blob is not None and blob.data and (blob.mime_type or "").startswith("audio/pcm"):
                    audio.append(blob.data)
        text = content.output_transcription.text if content.output_transcription is not None else None
        if audio or text:
            turn = self._turn if self._turn is not None and not self._turn.complete else self._start_turn()
            for pcm in audio:
                self._out(turn, {"type": "response.output_audio.delta", "delta": base64.b64encode(pcm).decode()})
            if text:
                turn.transcript += text
                self._out(turn, {"type": "response.output_audio_transcript.delta", "delta": text})
        if content.turn_complete and self._turn is not None and not self._turn.complete:
            turn = self._turn
            turn.complete = True
            if turn.released:
                self._finish(turn, "completed" if turn.state == "live" else "cancelled")

    def _start_turn(self) -> _Turn:
        """The model started answering: the user's turn is over. Hand its transcript to the service, which
        checks it and asks for the answer (response.create) or deletes the turn."""
        n = next(self._turns)
        user_item = f"gemini-input-{n}"
        heard, self._heard = "".join(self._heard).strip(), []
        self._turn = _Turn(n, user_item)
        self._emit({"type": "input_audio_buffer.committed", "item_id": user_item})
        self._emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": user_item,
                    "content_index": 0, "transcript": heard, "usage": {"type": "duration", "seconds": 0}})
        return self._turn

    def _out(self, turn: _Turn, data: dict[str, Any]) -> None:
        data = {**data, "response_id": turn.response_id, "item_id": turn.item_id, "output_index": 0,
                "content_index": 0}
        if turn.state == "held":
            turn.held.append(data)
        elif turn.state == "live":
            self._emit(data)

    def _release(self, turn: _Turn) -> None:
        turn.state = "live"
        turn.released = True
        self._emit({"type": "response.created", "response": {"id": turn.response_id, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        self._emit({"type": "response.output_item.added", "response_id": turn.response_id, "output_index": 0,
                    "item": {"id": turn.item_id, "type": "message", "role": "assistant", "content": []}})
        held, turn.held = turn.held, []
        for data in held:
            self._emit(data)
        if turn.complete:
            self._finish(turn, "completed")

    def _finish(self, turn: _Turn, status: str) -> None:
        if status == "completed":
            self._emit({"type": "response.output_audio_transcript.done", "response_id": turn.response_id,
                        "item_id": turn.item_id, "output_index": 0, "content_index": 0,
                        "transcript": turn.transcript})
        self._emit({"type": "response.done", "response": {"id": turn.response_id, "object": "realtime.response",
                                                          "status": status, "output": []}})
