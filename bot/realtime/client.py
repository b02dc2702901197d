"""The connection to a Realtime API server, through the ``openai`` package's realtime client.

``client.realtime.connect(model=...)`` opens ``<websocket base>/realtime?model=...``, where the websocket base
is ``realtime.base_url`` with ``http`` -> ``ws`` (``https`` -> ``wss``), or ``realtime.base_url`` itself when it
is already a ``ws(s)://`` URL (passed as the client's ``websocket_base_url``). Any server speaking the GA
Realtime events works.

:class:`RealtimeConnector` opens a connection and configures the session (``session.update`` with
``type: "realtime"``: instructions and voice from the persona, pcm16 24 kHz in and out, input transcription on,
turn detection with ``create_response: false`` so voicebot decides when the model answers); it returns a
:class:`RealtimeLink` once the server has confirmed the configuration with ``session.updated``.

Failures are sorted for the caller: :class:`RealtimeUnavailable` (worth retrying: unreachable, dropped,
server-side trouble) and :class:`RealtimeRejected` (retrying won't help: bad key, wrong URL, a configuration
the server refuses such as an unsupported audio format). Both carry one user-facing line.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from loguru import logger

from bot.config import RealtimeConfig
from bot.errors import VoicebotError
from bot.services.keys import api_key_from_env
from bot.persona import Persona

RATE = 24000
PCM_FORMAT = {"type": "audio/pcm", "rate": RATE}
DEFAULT_VOICE = "alloy"
OPENAI_WS = "wss://api.openai.com/v1"


class RealtimeUnavailable(VoicebotError):
    """The server could not be reached or the connection broke: a reconnect may help."""


class RealtimeRejected(VoicebotError):
    """The server refused us (key, URL, configuration): reconnecting would not help."""


def resolve_realtime_key(cfg: RealtimeConfig) -> str:
    """The key (see :func:`bot.services.keys.api_key_from_env`). A local server needs none."""
    return api_key_from_env(cfg.api_key_env, cfg.base_url, missing=(
        f"mode is 'realtime' but ${cfg.api_key_env} is not set: export your OpenAI API key in that variable, "
        "or set realtime.base_url to a compatible server"))


def endpoints(base_url: str | None) -> tuple[str | None, str | None, str]:
    """(http base_url, websocket_base_url, where) for the openai client; ``where`` is the websocket URL
    connected to, for messages."""
    if not base_url:
        return None, None, f"{OPENAI_WS}/realtime"
    parts = urlsplit(base_url.rstrip("/"))
    if parts.scheme in ("ws", "wss"):
        http = urlunsplit(("http" if parts.scheme == "ws" else "https", *parts[1:]))
        return http, base_url.rstrip("/"), f"{base_url.rstrip('/')}/realtime"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise VoicebotError(f"realtime.base_url {base_url!r} is not a URL: use http(s)://host:port/v1 or "
                            "ws(s)://host:port/v1")
    ws = urlunsplit(("ws" if parts.scheme == "http" else "wss", *parts[1:]))
    return base_url.rstrip("/"), None, f"{ws}/realtime"


def voice_for(cfg: RealtimeConfig, persona: Persona) -> str:
    return cfg.voice or persona.voices.get("openai", "") or DEFAULT_VOICE


def session_config(cfg: RealtimeConfig, persona: Persona) -> dict[str, Any]:
    """The ``session`` of the ``session.update`` voicebot sends (GA shape)."""
    if cfg.turn_detection == "semantic_vad":
        turn: dict[str, Any] = {"type": "semantic_vad", "eagerness": cfg.eagerness}
    else:
        turn = {"type": "server_vad", "threshold": cfg.vad_threshold, "prefix_padding_ms": cfg.prefix_padding_ms,
                "silence_duration_ms": cfg.silence_duration_ms}
    # voicebot answers (response.create) once the transcript has passed input moderation, and cancels
    # itself on barge-in (response.cancel + conversation.item.truncate at the ms played).
    turn.update(create_response=False, interrupt_response=False)
    transcription: dict[str, Any] = {"model": cfg.transcription_model}
    if cfg.language:
        transcription["language"] = cfg.language
    return {
        "type": "realtime",
        "instructions": persona.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": dict(PCM_FORMAT), "transcription": transcription, "turn_detection": turn},
            "output": {"format": dict(PCM_FORMAT), "voice": voice_for(cfg, persona)},
        },
    }


def _field(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def _is_pcm24k(fmt: Any) -> bool:
    if fmt is None:
        return True  # not reported: the server keeps what we asked for
    kind, rate = _field(fmt, "type"), _field(fmt, "rate")
    return kind in (None, "audio/pcm") and rate in (None, RATE)


class RealtimeLink:
    """One open, configured connection: send client events, receive server events."""

    def __init__(self, connection: Any, where: str) -> None:
        self._conn = connection
        self.where = where
        self.closed = False

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event (a ``RealtimeClientEventParam`` dict; the SDK serializes it)."""
        await self._conn.send(event)

    async def append_audio(self, pcm: bytes) -> None:
        """``input_audio_buffer.append``; pre-serialized, as it goes out 50 times a second."""
        await self._conn.send_raw(json.dumps({"type": "input_audio_buffer.append",
                                              "audio": base64.b64encode(pcm).decode("ascii")}))

    async def recv(self) -> Any:
        """The next server event (an ``openai.types.realtime`` model). Raises websockets'
        ``ConnectionClosed`` when the connection ends."""
        return await self._conn.recv()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wait_for(self._conn.close(), timeout=2.0)
        except Exception as exc:  # closing a broken connection: nothing left to do
            logger.debug(f"realtime: closing {self.where}: {type(exc).__name__}: {exc}")


class RealtimeConnector:
    """Opens and configures connections to one server for one persona."""

    input_rate = RATE
    """Sample rate of the audio the server hears."""
    transcript_ordered = True
    """The output transcript arrives ahead of (or with) the audio it describes (see bot/realtime/holdback.py)."""

    def __init__(self, cfg: RealtimeConfig, persona: Persona) -> None:
        self.cfg = cfg
        self.persona = persona
        self._api_key = resolve_realtime_key(cfg)
        self._http_base, self._ws_base, self.where = endpoints(cfg.base_url)
        self.session = session_config(cfg, persona)

    def _client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self._http_base,
                                  websocket_base_url=self._ws_base, max_retries=0)

    async def open(self) -> RealtimeLink:
        """Connect and configure the session; raises RealtimeUnavailable or RealtimeRejected."""
        timeout = self.cfg.connect_timeout_secs
        try:
            connection = await asyncio.wait_for(self._client().realtime.connect(model=self.cfg.model).enter(),
                                                timeout=timeout)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._explain_connect(exc) from None
        link = RealtimeLink(connection, self.where)
        try:
            await asyncio.wait_for(self._configure(link), timeout=timeout)
        except BaseException as exc:
            await link.close()
            if isinstance(exc, (RealtimeRejected, RealtimeUnavailable, asyncio.CancelledError)):
                raise
            if isinstance(exc, TimeoutError):
                raise RealtimeUnavailable(f"realtime server {self.where} did not confirm the session within "
                                          f"{timeout:g} s (no session.updated)") from None
            raise RealtimeUnavailable(f"realtime server {self.where} dropped the connection while the session "
                                      f"was being configured ({type(exc).__name__})") from None
        return link

    async def _configure(self, link: RealtimeLink) -> None:
        await link.send({"type": "session.update", "session": self.session})
        while True:
            event = await link.recv()
            kind = getattr(event, "type", None)
            if kind == "session.updated":
                self._check_formats(event)
                return
            if kind == "error":
                error = getattr(event, "error", None)
                message = _field(error, "message") or "error"
                param = _field(error, "param") or ""
                code = _field(error, "code") or _field(error, "type") or ""
                if "format" in param or "audio" in param:
                    raise RealtimeRejected(f"realtime server {self.where} does not accept the session's audio "
                                           f"(pcm16, 24 kHz): {message} [{code} {param}]".rstrip())
                raise RealtimeRejected(f"realtime server {self.where} refused the session configuration: "
                                       f"{message} [{code}{' ' + param if param else ''}]")
            # session.created and anything else before our configuration is confirmed: skip

    def _check_formats(self, event: Any) -> None:
        for direction in ("input", "output"):
            fmt = _field(event, "session", "audio", direction, "format")
            if not _is_pcm24k(fmt):
                got = f"{_field(fmt, 'type')} {_field(fmt, 'rate') or ''}".strip()
                raise RealtimeRejected(f"realtime server {self.where} does not support pcm16 24 kHz {direction} "
                                       f"audio (it configured {got}): voicebot only speaks pcm16 at 24 kHz")

    def _explain_connect(self, exc: BaseException) -> VoicebotError:
        return explain_connect(exc, self.where, self.cfg)


def explain_connect(exc: BaseException, where: str, cfg: RealtimeConfig) -> VoicebotError:
    """A failed websocket connection as one line, sorted into worth-retrying or not."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return RealtimeRejected(f"realtime server {where} rejected the API key (HTTP {status}): check "
                                    f"${cfg.api_key_env}")
        if status == 404:
            return RealtimeRejected(f"realtime server {where} has no realtime endpoint (HTTP 404): check "
                                    "realtime.base_url and realtime.model")
        if status >= 500 or status == 429:
            return RealtimeUnavailable(f"realtime server {where} is unavailable (HTTP {status})")
        return RealtimeRejected(f"realtime server {where} refused the connection (HTTP {status})")
    if isinstance(exc, InvalidURI):
        return RealtimeRejected(f"realtime.base_url gives an invalid websocket URL {where}: {exc}")
    if isinstance(exc, InvalidHandshake):
        return RealtimeUnavailable(f"realtime server {where} failed the websocket handshake "
                                   f"({type(exc).__name__}): is it a Realtime API server?")
    if isinstance(exc, TimeoutError):
        return RealtimeUnavailable(f"realtime server {where} did not answer within "
                                   f"{cfg.connect_timeout_secs:g} s")
    if isinstance(exc, OSError):
        hint = "start it or fix realtime.base_url" if cfg.base_url else "check your network"
        return RealtimeUnavailable(f"realtime server {where} is unreachable ({type(exc).__name__}): {hint}")
    if isinstance(exc, openai.OpenAIError):
        return RealtimeRejected(f"realtime client error for {where}: {exc}")
    return RealtimeUnavailable(f"realtime server {where}: connection failed ({type(exc).__name__}: {exc})")
