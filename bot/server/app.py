"""``voicebot serve``: one process, many voice sessions over WebSocket, a browser client.

Routes (one port, served by the ``websockets`` library):

* ``GET /``            the browser client (static HTML/JS from ``bot/server/static``)
* ``GET /ws``          WebSocket upgrade: one voice session, pipecat's protobuf frames (:mod:`bot.transports.websocket`)
* ``GET /report/<id>`` the audit report of a session of this server (its id is sent to that session's client)
* ``GET /healthz``     ``ok`` (200) or ``draining`` (503)
* ``GET /metrics``     Prometheus text

Models are loaded once at start-up (Whisper and the embedded LLM are process-wide caches) and shared; every
connection gets its own :class:`~bot.session.Session`: its own pipeline, context, persona and audit directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import http
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from bot.config import Settings
from bot.cpu import set_sessions
from bot.errors import VoicebotError
from bot.persona import Persona, load_persona
from bot.server.metrics import ServerMetrics
from bot.session import Session
from bot.signals import Stop
from bot.transports.websocket import (
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    POLICY,
    RESTART,
    TRY_AGAIN,
    CloseReason,
    Limits,
    WebsocketTransport,
)
from bot.turns import Turn, TurnTracker
from pipelines import SessionHooks

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
FORWARDED_EVENTS = {"user.started_speaking", "user.stopped_speaking", "stt.final", "moderation.verdict",
                    "llm.sentence", "bot.started_speaking", "bot.stopped_speaking", "bot.interrupted", "error"}
"""Turn-tracker events sent to the client as ``{"type": "event", "kind": ..., ...}`` messages."""
REPORT_AUDIO_BYTES = 24 * 1024 * 1024
"""Audio embedded in one served ``/report`` page at most (later clips are named, not embedded): the page and
the time to build it stay bounded however long the session ran. ``voicebot audit report`` writes it all."""
SESSION_END_SECS = 1.2
"""How long closed sessions get to end (pipeline cancelled, audit log closed) before the server moves on."""
REPORT_BUILDS = 2
"""Reports built at the same time (each in a worker thread); more requests wait their turn."""


def is_loopback(host: str) -> bool:
    """Only this machine can connect (an empty host binds every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str | None, int | None]:
    """``Host`` header -> (lower-case name without brackets, port or 80); (None, None) if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else None)
    else:
        name, _, port = value.partition(":")
    if not name or port is None or (port and not port.isdigit()):
        return None, None
    return name, int(port) if port else 80


async def _each(items: list[Any], action, *, timeout: float) -> None:
    """``action(item)`` for every item concurrently, for at most ``timeout`` (the rest are cancelled)."""
    tasks = [asyncio.ensure_future(action(item)) for item in items]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()


def _quiet_ws_logger() -> logging.Logger:
    """The websockets library logs every aborted handshake (browsers open and drop speculative connections)
    with a traceback; sessions report their own errors, so its log stays quiet."""
    log = logging.getLogger("voicebot.server.websockets")
    log.setLevel(logging.CRITICAL)
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


@dataclass
class LiveSession:
    id: str
    persona: str
    transport: WebsocketTransport
    session: Session | None = None
    audit_dir: Path | None = None
    started: float = field(default_factory=time.monotonic)


class VoicebotServer:
    """Owns the listening socket, the running sessions and the metrics."""

    def __init__(self, settings: Settings, *, token: str | None = None) -> None:
        cfg = settings.server
        self.settings = settings
        self.cfg = cfg
        if token is None:
            token = os.environ.get(cfg.token_env) or None
        if token is None and not is_loopback(cfg.host):
            raise VoicebotError(f"server.host {cfg.host!r} is not a loopback address: set a secret token in "
                                f"${cfg.token_env} (server.token_env) before exposing the bot")
        self._token = token.encode() if token else None
        # Threads per model runtime and the fair scheduler's slots for this many sessions (bot/cpu.py),
        # before any model is loaded.
        set_sessions(cfg.max_sessions)
        self.personas = [settings.persona, *[p for p in cfg.personas if p != settings.persona]]
        self.limits = Limits(sample_rate=settings.transport.sample_rate,
                             max_messages_per_sec=cfg.max_messages_per_sec,
                             max_audio_burst_secs=cfg.max_audio_burst_secs,
                             max_input_lag_secs=cfg.max_input_lag_secs,
                             audio_lead_secs=cfg.audio_lead_secs,
                             send_timeout_secs=cfg.send_timeout_secs)
        self.metrics = ServerMetrics()
        self.sessions: dict[str, LiveSession] = {}
        self.finished: dict[str, Path] = {}
        """Audit dirs of ended sessions (their reports stay reachable), newest last, bounded."""
        self.draining = False
        self._server: Server | None = None
        self._port: int | None = None
        self._persona_cache: dict[str, Persona] = {}
        self._report_slots = asyncio.Semaphore(REPORT_BUILDS)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    # -- lifecycle ---------------------------------------------------------------------------------

    def load_models(self) -> None:
        """Check every allowed persona and load the shared models before the first client connects."""
        for name in self.personas:
            self._persona_cache[name] = load_persona(name)
        from bot.transports.file import FileTransport
        import numpy as np

        probe = FileTransport(np.zeros(1600, dtype=np.float32), in_rate=self.settings.transport.sample_rate,
                              out_rate=self.settings.transport.output_sample_rate)
        Session(self.settings, self._persona_cache[self.settings.persona], probe)
        # Moderation models (e.g. the profanity classifier) are process-wide once imported: load them now,
        # not during the first user's first turn.
        from moderation import build_moderator

        mod = self.settings.moderation
        for name in ("input", "output"):
            if mod.stage(name).enabled:
                asyncio.run(build_moderator(mod.stage(name), mod, name=name).warmup())
        # The models and libraries just loaded are millions of long-lived objects: a full garbage collection
        # traversing them took ~250 ms on 2 cores, holding the GIL (every session's audio stalled; a report
        # build's allocations triggered one). Frozen, collections only look at what sessions allocate.
        gc.collect()
        gc.freeze()

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        self._server = await serve(
            self._handle, self.cfg.host, self.cfg.port,
            process_request=self._process_request,
            max_size=self.cfg.max_frame_bytes,
            max_queue=64,
            write_limit=64 * 1024,
            ping_interval=20, ping_timeout=20,
            server_header="voicebot",
            logger=_quiet_ws_logger(),
        )
        sock = next(iter(self._server.sockets))
        host, port = sock.getsockname()[:2]
        self._port = port
        return host, port

    def begin_drain(self) -> None:
        """Refuse new sessions from now on (``/healthz`` 503, new connections 1012). Synchronous: the first
        signal calls it from its handler, before anything else runs."""
        self.draining = True
        self.metrics.draining.set(1)

    async def drain(self) -> None:
        """Refuse new sessions, tell running ones to reconnect (a ``drain`` message), give them
        ``drain_secs`` to finish, then close them (1012 "reconnect"). Every wait is bounded."""
        self.begin_drain()
        reconnect = "server restarting: reconnect"
        await _each(list(self.sessions.values()), lambda live: live.transport.send_message(
            "drain", reason=reconnect, within_secs=self.cfg.drain_secs), timeout=2.0)
        await self._sessions_ended(self.cfg.drain_secs)
        await _each(list(self.sessions.values()),
                    lambda live: live.transport.close(CloseReason(RESTART, reconnect)), timeout=2.0)
        await self._sessions_ended(SESSION_END_SECS)

    async def close(self) -> None:
        """Stop at once: every session still running is closed (1001 "server stopped"; its pipeline is
        cancelled and its audit log closed), then the listening socket. Bounded: about a second."""
        self.begin_drain()
        closing = [asyncio.ensure_future(live.transport.close(CloseReason(GOING_AWAY, "server stopped")))
                   for live in list(self.sessions.values())]
        await self._sessions_ended(SESSION_END_SECS)
        for task in closing:
            task.cancel()  # the sessions ended (or had their time): a client slow to answer the close frame is not waited for
        if self._server is not None:
            server, self._server = self._server, None
            server.close()  # websockets closes any connection left (1001) and waits for its handler: bounded here
            await asyncio.wait({asyncio.ensure_future(server.wait_closed())}, timeout=0.5)

    async def _sessions_ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def run(self, stop: Stop, on_ready=None) -> None:
        """Serve until ``stop`` is requested, then drain; run it with :func:`bot.signals.run_until_stopped`.

        The first SIGINT/SIGTERM starts the drain (new sessions refused at once, clients told to reconnect,
        ``drain_secs`` for them to finish); a second one cancels this coroutine, and every session still
        running is closed at once with its audit log (``close``)."""
        stop.on_request(lambda _signum: self.begin_drain())
        try:
            address = await self.start()
            if on_ready is not None:
                on_ready(address)
            await stop.requested.wait()
            await self.drain()
        finally:
            await self.close()

    # -- HTTP --------------------------------------------------------------------------------------

    def _authorized(self, request: Request, query: dict[str, list[str]]) -> bool:
        if self._token is None:
            return True
        given = (query.get("token") or [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self._token)

    def _host_ok(self, request: Request) -> bool:
        """Without a token, only requests addressed to this machine by a loopback name are answered.

        A tokenless server binds loopback, but a web page can still reach it by DNS rebinding: its own name
        re-resolved to 127.0.0.1. Such a request carries the page's name in ``Host`` (and the same in
        ``Origin``, so the origin check alone passes it); requiring ``Host`` to be localhost / a loopback
        address with our port shuts that out."""
        if self._token is not None:
            return True
        name, port = split_host(request.headers.get("Host", ""))
        return name is not None and is_loopback(name) and port == (self._port or self.cfg.port)

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: the token (when required) is the check
        host = request.headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}") or origin in self.cfg.allowed_origins

    @staticmethod
    def _response(status: http.HTTPStatus, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
                  extra: list[tuple[str, str]] | None = None) -> Response:
        if isinstance(body, str):
            body = body.encode()
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                           *(extra or [])])
        return Response(status.value, status.phrase, headers, body)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Every HTTP request, on the event loop that paces every session's audio: nothing here may block
        (a report is built in a worker thread)."""
        url = urlsplit(request.path)
        path, query = url.path, parse_qs(url.query)
        if not self._host_ok(request):
            self.metrics.refusals.labels("host").inc()
            port = self._port or self.cfg.port
            return self._response(http.HTTPStatus.MISDIRECTED_REQUEST,
                                  f"host not allowed: without a token this server only answers requests to "
                                  f"localhost:{port}, 127.0.0.1:{port} or [::1]:{port}; to serve other names, "
                                  f"set a token in ${self.cfg.token_env}\n")
        if path == "/healthz":
            if self.draining:
                return self._response(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
            return self._response(http.HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            self.metrics.sessions.set(len(self.sessions))
            return self._response(http.HTTPStatus.OK, self.metrics.render(), self.metrics.content_type)
        if path == "/ws":
            if not self._origin_ok(request):
                self.metrics.refusals.labels("origin").inc()
                return self._response(http.HTTPStatus.FORBIDDEN, "origin not allowed: add it to "
                                                                 "server.allowed_origins\n")
            if not self._authorized(request, query):
                self.metrics.refusals.labels("token").inc()
                return self._response(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token: pass ?token= or "
                                                                    "'Authorization: Bearer <token>'\n")
            return None  # go on with the WebSocket handshake
        if path.startswith("/report/"):
            if not self._authorized(request, query):
                return self._response(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            return await self._report(path[len("/report/"):])
        name = "index.html" if path == "/" else path.lstrip("/")
        target = STATIC / name
        if "/" not in name and target.suffix in STATIC_TYPES and target.is_file():
            csp = ("default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                   "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
            return self._response(http.HTTPStatus.OK, target.read_bytes(), STATIC_TYPES[target.suffix],
                                  [("Content-Security-Policy", csp)])
        return self._response(http.HTTPStatus.NOT_FOUND, "not found\n")

    async def _report(self, sid: str) -> Response:
        from bot.audit.report import report_html

        live = self.sessions.get(sid)
        audit_dir = live.audit_dir if live is not None else self.finished.get(sid)
        if audit_dir is None:
            return self._response(http.HTTPStatus.NOT_FOUND, "no audit log for this session on this server\n")
        try:
            # Reading the log, verifying its chain (hashing every audio file) and base64-embedding the clips
            # takes seconds for a long session: in a thread, or every live session's audio would stall.
            async with self._report_slots:
                page = await asyncio.to_thread(
                    lambda: report_html(audit_dir, max_audio_bytes=REPORT_AUDIO_BYTES).encode())
        except (VoicebotError, OSError, ValueError) as exc:
            return self._response(http.HTTPStatus.INTERNAL_SERVER_ERROR, f"report unavailable: {exc}\n")
        return self._response(http.HTTPStatus.OK, page, "text/html; charset=utf-8")

    # -- one voice session -------------------------------------------------------------------------

    async def _refuse(self, conn: ServerConnection, reason: str, close: CloseReason) -> None:
        self.metrics.refusals.labels(reason).inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(close.code, close.reason), timeout=2.0)

    async def _handle(self, conn: ServerConnection) -> None:
        query = parse_qs(urlsplit(conn.request.path).query) if conn.request else {}
        if self.draining:
            await self._refuse(conn, "draining", CloseReason(RESTART, "server is shutting down: reconnect"))
            return
        if len(self.sessions) >= self.cfg.max_sessions:
            await self._refuse(conn, "full", CloseReason(
                TRY_AGAIN, f"server full ({self.cfg.max_sessions} sessions): try again later"))
            return
        persona_name = (query.get("persona") or [self.settings.persona])[0]
        if persona_name not in self.personas:
            await self._refuse(conn, "persona", CloseReason(
                POLICY, f"persona {persona_name!r} is not offered here: choose one of {', '.join(self.personas)}"))
            return
        sid = secrets.token_urlsafe(12)
        transport = WebsocketTransport(conn, out_rate=self.settings.transport.output_sample_rate, limits=self.limits)
        live = LiveSession(sid, persona_name, transport)
        self.sessions[sid] = live  # holds the slot from here on: admission counts it
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.sessions_total.inc()
        try:
            await self._run_session(live)
        except VoicebotError as exc:
            await transport.close(CloseReason(INTERNAL, str(exc)[:120]))
        except Exception as exc:  # one broken session must not take the server down
            logger.exception(f"session {sid} failed")
            await transport.close(CloseReason(INTERNAL, f"session failed: {type(exc).__name__}"))
        finally:
            await transport.close(CloseReason(NORMAL, "session ended"))
            self.metrics.dropped_audio.inc(transport.input().drops.total_secs)
            code = transport.close_reason.code if transport.close_reason else NORMAL
            self.metrics.session_ends.labels(str(code)).inc()
            self.sessions.pop(sid, None)
            if live.audit_dir is not None:
                self.finished[sid] = live.audit_dir
                while len(self.finished) > 1000:
                    self.finished.pop(next(iter(self.finished)))
            self.metrics.sessions.set(len(self.sessions))

    async def _run_session(self, live: LiveSession) -> None:
        persona = self._persona_cache.get(live.persona) or await asyncio.to_thread(load_persona, live.persona)
        settings = self.settings.model_copy(update={"persona": live.persona})
        # Building a pipeline loads the session's own voice and VAD: off the event loop, so running
        # sessions keep their real-time audio.
        session = await asyncio.to_thread(Session, settings, persona, live.transport, self._hooks(live))
        live.session = session
        session.open_audit(transport="websocket", server_session=live.id)
        live.audit_dir = session.result.audit_dir
        await live.transport.send_message(
            "session", id=live.id, persona=persona.name, mode=settings.mode,
            report=f"/report/{live.id}" if live.audit_dir else None,
            models=session.result.models)

        async def never(_tracker: TurnTracker, _task: Any) -> None:
            await asyncio.Event().wait()

        # The session lives as long as its connection. When the connection ends (the client left, broke a
        # limit, or the server drains) nobody is listening any more: the pipeline is cancelled rather than
        # ended gracefully, which would first synthesize the rest of a reply no one will hear (on a busy
        # CPU, for minutes). Session.run bounds the cancel, records the turn in flight as cut off and
        # closes the audit log.
        run = asyncio.create_task(session.run(never), name=f"session-{live.id}")
        closed = asyncio.create_task(live.transport.closed.wait())
        try:
            await asyncio.wait({run, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not run.done():
                run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run

    def _hooks(self, live: LiveSession) -> SessionHooks:
        """The session's turn events go to its client (minus unchecked text) and to the metrics."""
        transport = live.transport

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "stt.final" and data.get("text"):
                from pipecat.utils.time import time_now_iso8601

                transport.post_transcription(data["text"], time_now_iso8601())
            if kind == "moderation.verdict" and not (data.get("verdict") or {}).get("allowed", True):
                self.metrics.moderation_blocks.labels(str(data.get("stage", "?"))).inc()
            if kind in FORWARDED_EVENTS:
                transport.post_message("event", kind=kind, data=client_view(kind, data))

        def on_turn(turn: Turn) -> None:
            if turn.index == 0:
                return
            self.metrics.turns.inc()
            timings = turn.timings()
            if timings.get("v2v_ms") is not None:
                self.metrics.v2v.observe(timings["v2v_ms"] / 1000.0)
            if turn.refused:
                self.metrics.refused_turns.inc()
            transport.post_message("turn", **_turn_message(turn))

        return SessionHooks(on_event=[on_event], on_turn=[on_turn])


VERDICT_FIELDS = ("allowed", "action", "categories")
"""What a client sees of a moderation verdict: not its reason, scores or details (they quote the text)."""


def _verdict(v: Any) -> dict[str, Any] | None:
    return {k: v.get(k) for k in VERDICT_FIELDS} if isinstance(v, dict) else None


def client_view(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A turn-tracker event as the client may see it: never a text that moderation blocked or did not
    check (the bot does not say it, so the wire does not carry it either). The audit log keeps it all."""
    if kind == "llm.sentence" and data.get("fate") != "spoken":
        return {**data, "text": None}
    if kind == "moderation.verdict":
        verdict = data.get("verdict") or {}
        return {**data, "text": data.get("text") if verdict.get("allowed") else None, "verdict": _verdict(verdict)}
    return data


def _turn_message(turn: Turn) -> dict[str, Any]:
    return {
        "turn": turn.index,
        "user": turn.transcript,
        "said": turn.spoken_text,
        "interrupted": turn.interrupted,
        "refused": turn.refused,
        "input_verdict": _verdict(turn.input_verdict),
        "output_verdicts": [_verdict(v) for v in turn.output_verdicts],
        "timings": turn.timings(),
        "errors": turn.errors,
    }
