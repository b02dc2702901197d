"""`voicebot serve`: the /ws protocol with pipecat's own ProtobufFrameSerializer as the client, on the real
embedded models (Silero, Whisper, Piper; scripted LLM replies so the answers are known), plus the HTTP
routes, admission control, limits, token/origin checks and drain."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soxr
import websockets

from bot.audit import verify
from bot.errors import VoicebotError
from bot.server import VoicebotServer
from bot.server.client import VoiceClient
from conftest import word_recall

REPLY = "Paris is the capital of France. It is a lovely city on the river Seine."
LONG_REPLY = ("Let me tell you a long story about the sea. The waves were high and the wind was cold. "
              "The sailors sang songs all night long. In the morning they saw the coast at last.")


class ServerThread:
    """A VoicebotServer running on its own event loop in a thread, like the real process."""

    def __init__(self, settings, token: str | None = None) -> None:
        self.server = VoicebotServer(settings, token=token)
        self.server.load_models()
        self.loop = asyncio.new_event_loop()
        self.address: tuple[str, int] | None = None
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.address = self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(30)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.address[1]}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.address[1]}/ws"

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        from bot.cpu import set_sessions

        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        set_sessions(1)  # the server sized the process-wide CPU plan for its sessions: undo for other tests


def make_settings(tmp: Path, script: list[str], **extra):
    from bot.config import load_settings

    base = {"audit.dir": str(tmp / "audits"), "llm.provider": "scripted", "llm.script": script,
            "server.port": 0, "server.max_sessions": 2}
    base.update(extra)
    return load_settings(None, base)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerThread(make_settings(tmp_path_factory.mktemp("serve"), [REPLY]))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def question(piper):
    audio, rate = piper("What is the capital of France?")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def wait_idle(srv: ServerThread, timeout: float = 20.0) -> None:
    """Sessions of earlier tests finish closing in the background: wait until none runs."""
    deadline = time.monotonic() + timeout
    while srv.server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.server.sessions


async def ask(client: VoiceClient, speech: np.ndarray, *, wait_secs: float = 12.0) -> dict:
    """Say ``speech`` then keep the mic open (silence) until a turn message comes back."""
    await client.wait_session()
    await client.send_silence(0.3)
    n = len(client.log.turns())
    await client.send_audio(speech)
    deadline = time.monotonic() + wait_secs
    while len(client.log.turns()) == n and time.monotonic() < deadline and not client.closed.is_set():
        await client.send_silence(0.2)
    assert len(client.log.turns()) > n, f"no turn came back: {client.log.messages[-5:]}"
    return client.log.turns()[-1]


def test_http_routes(server):
    status, ctype, body = get(server.base + "/healthz")
    assert (status, body) == (200, "ok\n")
    status, ctype, body = get(server.base + "/")
    assert status == 200 and ctype.startswith("text/html") and "app.js" in body
    status, ctype, body = get(server.base + "/app.js")
    assert status == 200 and "javascript" in ctype and "encodeAudio" in body
    assert get(server.base + "/../pyproject.toml")[0] == 404
    assert get(server.base + "/nope.html")[0] == 404
    status, ctype, body = get(server.base + "/metrics")
    assert status == 200 and "voicebot_sessions " in body and "voicebot_voice_to_voice_seconds_bucket" in body


def test_spoken_turn_over_the_socket(server, question, transcriber):
    async def go():
        async with VoiceClient(server.ws) as c:
            turn = await ask(c, question)
            await c.send_silence(0.5)
            return c, turn

    c, turn = asyncio.run(go())
    session = c.session
    assert session["persona"] == "Nova" and session["report"].startswith("/report/")
    # The user's transcription arrives as a pipecat TranscriptionFrame.
    assert any(word_recall("capital of France", t) >= 0.6 for t in c.log.transcriptions), c.log.transcriptions
    assert turn["said"] == REPLY and not turn["interrupted"]
    assert turn["timings"]["v2v_ms"] is not None
    # What the client played transcribes back to what was logged as said.
    heard = transcriber(soxr.resample(c.log.track(24000), 24000, 16000))
    assert word_recall(REPLY, heard) >= 0.7, heard
    # Paced in real time: the reply's audio arrived over about as long as it plays, not in one burst.
    arrivals = [p.start for p in c.log.played]
    audio_secs = sum(len(p.samples) / p.rate for p in c.log.played)
    assert audio_secs > 2.0
    assert arrivals[-1] - arrivals[0] >= audio_secs - 0.5
    assert not c.log.underruns, c.log.underruns
    assert c.log.close_code == 1000
    # The session's audit log is complete and verifies; its report is served.
    events = [m for m in c.log.messages if m["type"] == "event"]
    assert {"stt.final", "moderation.verdict", "llm.sentence"} <= {e["kind"] for e in events}
    deadline = time.monotonic() + 10
    while session["id"] in server.server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    audit_dir = server.server.finished[session["id"]]
    assert verify(audit_dir).ok
    status, ctype, page = get(server.base + session["report"])
    assert status == 200 and "Paris" in page
    assert get(server.base + "/report/not-a-session")[0] == 404
    status, _, metrics = get(server.base + "/metrics")
    assert "voicebot_turns_total 1.0" in metrics or "voicebot_turns_total 2.0" in metrics


@pytest.mark.parametrize("payload,code,words", [
    (b"\xff\xff\xff\xff not protobuf", 1007, "malformed frame"),
    ("hello", 1003, "text messages"),
    ("wrong-rate", 1003, "16000 hz mono"),
    (b"\x00" * 20000, 1009, "exceeds limit"),
])
def test_bad_input_ends_that_session_with_a_reason(server, payload, code, words):
    from pipecat.frames.frames import OutputAudioRawFrame

    async def go():
        async with VoiceClient(server.ws) as c:
            await c.wait_session()
            if payload == "wrong-rate":
                await c.send_frame(OutputAudioRawFrame(audio=bytes(960), sample_rate=48000, num_channels=1))
            else:
                await c.send_raw(payload)
            await asyncio.wait_for(c.closed.wait(), 10)
            return c

    c = asyncio.run(go())
    assert c.log.close_code == code and words in c.log.close_reason.lower(), (c.log.close_code, c.log.close_reason)


def test_audio_faster_than_real_time_is_refused(server):
    async def go():
        async with VoiceClient(server.ws) as c:
            await c.wait_session()
            from pipecat.frames.frames import OutputAudioRawFrame

            frame = OutputAudioRawFrame(audio=bytes(640 * 5), sample_rate=16000, num_channels=1)  # 100 ms
            for _ in range(60):  # 6 s of audio in a burst
                if not await c.send_frame(frame):
                    break
            await asyncio.wait_for(c.closed.wait(), 10)
            return c

    c = asyncio.run(go())
    assert c.log.close_code == 1008 and "faster than real time" in c.log.close_reason


def test_admission_persona_and_isolation(server, question, transcriber):
    """max_sessions = 2: the third connection is refused with 1013; a client killed mid-reply leaves the
    other session's answer intact and its own audit log verifying."""

    wait_idle(server)

    async def go():
        a = await VoiceClient(server.ws + "?persona=pirate").connect()
        b = await VoiceClient(server.ws).connect()
        await a.wait_session()
        await b.wait_session()
        third = await VoiceClient(server.ws).connect()
        await asyncio.wait_for(third.closed.wait(), 10)
        unknown = None
        # a: speak, and vanish (TCP reset, no close frame) as soon as its reply starts playing.
        async def speak_and_die():
            await a.send_silence(0.3)
            await a.send_audio(question)
            while not a.log.played:
                await a.send_silence(0.1)
            a.ws.transport.abort()

        b_turn, _ = await asyncio.gather(ask(b, question), speak_and_die())
        await b.send_silence(0.3)
        await b.close()
        # A slot is free again once the killed session is cleaned up; an unknown persona is refused.
        deadline = time.monotonic() + 15
        while len(server.server.sessions) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        unknown = await VoiceClient(server.ws + "?persona=villain").connect()
        await asyncio.wait_for(unknown.closed.wait(), 10)
        return a, b, third, unknown, b_turn

    a, b, third, unknown, b_turn = asyncio.run(go())
    assert third.log.close_code == 1013 and "server full" in third.log.close_reason
    assert unknown.log.close_code == 1008 and "villain" in unknown.log.close_reason
    assert a.session["persona"] == "Captain Reed" and b.session["persona"] == "Nova"
    assert b_turn["said"] == REPLY, b.log.turns()
    heard = transcriber(soxr.resample(b.log.track(24000), 24000, 16000))
    assert word_recall(REPLY, heard) >= 0.7, heard  # (gaps under concurrency: benchmarks/load.py measures them)
    # Nothing of a's session reached b.
    assert all(m.get("id") != a.session["id"] for m in b.log.of_type("session"))
    a_dir = server.server.finished[a.session["id"]]
    b_dir = server.server.finished[b.session["id"]]
    assert a_dir != b_dir and verify(a_dir).ok and verify(b_dir).ok


def test_barge_in_stops_audio_within_one_frame(tmp_path, piper):
    srv = ServerThread(make_settings(tmp_path, [LONG_REPLY], **{"vad.speculate": False}))
    interrupt_audio, rate = piper("Stop, stop please.")
    interrupt_audio = soxr.resample(interrupt_audio, rate, 16000).astype(np.float32)
    question_audio, rate = piper("Tell me a story.")
    question_audio = soxr.resample(question_audio, rate, 16000).astype(np.float32)
    try:
        async def go():
            async with VoiceClient(srv.ws) as c:
                await c.wait_session()
                await c.send_silence(0.3)
                await c.send_audio(question_audio)
                while len(c.log.played) < 40:  # ~1.6 s of the reply
                    await c.send_silence(0.02)
                await c.send_audio(interrupt_audio)
                deadline = time.monotonic() + 10
                while not c.log.interruptions and time.monotonic() < deadline:
                    await c.send_silence(0.02)
                await c.send_silence(1.0)
                return c

        c = asyncio.run(go())
    finally:
        srv.stop()
    assert c.log.interruptions, "no InterruptionFrame was sent"
    cut = c.log.interruptions[0]
    after = [p for p in c.log.played if p.start > cut]
    # Played audio ends at the interruption; at most one 40 ms frame was in flight.
    late = [p for p in after if p.start < cut + 0.5]
    assert len(late) <= 1, [round(p.start - cut, 3) for p in late]
    total = sum(len(p.samples) / p.rate for p in c.log.played)
    assert total < 12.0  # the whole story would be ~14 s


def test_token_origin_and_drain(tmp_path, question):
    settings = make_settings(tmp_path, [REPLY], **{"server.host": "0.0.0.0", "server.drain_secs": 0.5,
                                                    "server.allowed_origins": ["https://app.example"]})
    with pytest.raises(VoicebotError, match="VOICEBOT_TOKEN"):
        VoicebotServer(settings, token=None)
    srv = ServerThread(make_settings(tmp_path, [REPLY], **{"server.drain_secs": 0.5,
                                                            "server.allowed_origins": ["https://app.example"]}),
                       token="s3cret-token")
    try:
        async def go():
            with pytest.raises(websockets.InvalidStatus) as wrong:
                await VoiceClient(srv.ws + "?token=nope").connect()
            with pytest.raises(websockets.InvalidStatus) as missing:
                await VoiceClient(srv.ws).connect()
            with pytest.raises(websockets.InvalidStatus) as origin:
                await VoiceClient(srv.ws + "?token=s3cret-token", origin="https://evil.example").connect()
            ok = await VoiceClient(srv.ws, headers={"Authorization": "Bearer s3cret-token"},
                                   origin="https://app.example").connect()
            await ok.wait_session()
            drain = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(srv.server.drain(), srv.loop))
            await asyncio.sleep(0.2)
            assert get(srv.base + "/healthz")[0] == 503
            await asyncio.wait_for(ok.closed.wait(), 10)
            await drain
            return wrong.value, missing.value, origin.value, ok

        wrong, missing, origin, ok = asyncio.run(go())
    finally:
        srv.stop()
    assert wrong.response.status_code == 401 and missing.response.status_code == 401
    assert origin.response.status_code == 403
    assert ok.log.close_code == 1012 and "reconnect" in ok.log.close_reason
    assert any(m["type"] == "drain" for m in ok.log.messages)


def test_serve_command_one_line_errors_and_sigterm_drain(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--set", "llm.provider=scripted",
           "--set", f'llm.script=["{REPLY}"]', "--set", f"audit.dir={tmp_path / 'audits'}"]
    exposed = subprocess.run([*cmd, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120, env=env,
                             cwd=Path(__file__).resolve().parent.parent)
    assert exposed.returncode == 2 and "Traceback" not in exposed.stderr
    assert exposed.stderr.strip().splitlines() == [exposed.stderr.strip()] and "VOICEBOT_TOKEN" in exposed.stderr
    # With the token in the environment the same bind is allowed; the token never appears in the output.
    env["VOICEBOT_TOKEN"] = "tok-" + "x" * 20
    proc = subprocess.Popen([*cmd, "--host", "0.0.0.0", "--port", "0", "--set", "server.drain_secs=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        port = None
        for line in proc.stdout:
            m = re.search(r"listening on http://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
                break
        assert port, proc.stderr.read()

        async def go():
            c = await VoiceClient(f"ws://127.0.0.1:{port}/ws?token={env['VOICEBOT_TOKEN']}").connect()
            await c.wait_session()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(c.closed.wait(), 20)
            return c

        c = asyncio.run(go())
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]  # SIGTERM: 128 + 15, like every command
    assert c.log.close_code == 1012 and "reconnect" in c.log.close_reason
    assert env["VOICEBOT_TOKEN"] not in out + err


def test_a_session_that_falls_behind_drops_its_oldest_input(server):
    """The server's loop stalls for 2.5 s while the client keeps talking in real time: the backlog beyond
    server.max_input_lag_secs (1 s) is dropped, oldest first, and audited, and the session goes on."""
    import re

    from bot.audit.read import read_session

    wait_idle(server)

    async def go():
        async with VoiceClient(server.ws) as c:
            await c.wait_session()
            await c.send_silence(0.5)
            server.loop.call_soon_threadsafe(time.sleep, 2.5)  # the session's event loop is busy
            await c.send_silence(3.5)
            return c

    c = asyncio.run(go())
    assert c.log.close_code == 1000, (c.log.close_code, c.log.close_reason)
    deadline = time.monotonic() + 10
    while c.session["id"] not in server.server.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [r for r in read_session(server.server.finished[c.session["id"]]).records
               if r.get("type") == "audio.dropped"]
    dropped = sum(r["data"]["secs"] for r in records)
    assert records and records[0]["data"]["source"] == "websocket" and 1.0 <= dropped <= 2.6, records
    metrics = get(server.base + "/metrics")[2]
    assert float(re.search(r"^voicebot_dropped_audio_seconds_total (\S+)", metrics, re.M).group(1)) >= 1.0


def test_outbox_overflow_closes_with_its_reason_and_the_close_is_awaited():
    """A client that stops reading fills the outbox: the session counts as closed at once (1008 with its
    reason), and the close frame is sent by a task the transport keeps and awaits when the session ends,
    not by a fire-and-forget task (which could be garbage-collected, and lost its errors)."""
    from bot.transports.websocket import NORMAL, POLICY, CloseReason, Limits, WebsocketTransport

    class StalledConn:
        def __init__(self) -> None:
            self.closes: list[tuple[int, str]] = []

        async def close(self, code: int, reason: str) -> None:
            await asyncio.sleep(0.05)
            self.closes.append((code, reason))

    async def go():
        conn = StalledConn()
        t = WebsocketTransport(conn, out_rate=24000, limits=Limits())
        for i in range(600):  # the outbox holds 512
            t.post_message("event", n=i)
        closed_at_once = t.closed.is_set(), t.close_reason
        outbox = t.output()._outbox
        while not outbox.empty():
            outbox.get_nowait().close()
        await t.close(CloseReason(NORMAL, "session ended"))  # what the server does when the session ends
        return conn, closed_at_once

    conn, (closed, reason) = asyncio.run(go())
    assert closed and reason is not None and reason.code == POLICY
    assert conn.closes == [(POLICY, "client stopped reading: too many messages waiting to be sent")]


def raw_get(port: int, path: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET with exactly this Host header (as a DNS-rebound page's request carries its own name)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_tokenless_server_answers_only_loopback_host_names(server):
    """DNS rebinding: a page at http://evil.example:PORT whose name now resolves to 127.0.0.1 sends
    Host and Origin both evil.example:PORT, so comparing them proves nothing. Without a token the server
    answers only requests addressed to localhost / a loopback address with its own port."""
    port = server.address[1]
    assert not server.server.token_required
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    rebound = f"evil.example:{port}"
    status, body = raw_get(port, "/ws", rebound, {**ws, "Origin": f"http://{rebound}"})
    assert status == 421 and "host not allowed" in body and f"localhost:{port}" in body, (status, body)
    for path in ("/", "/metrics", "/report/some-id"):
        assert raw_get(port, path, rebound)[0] == 421, path
    assert raw_get(port, "/", f"127.0.0.1:{port + 1}")[0] == 421  # a loopback name, but not our port
    assert raw_get(port, "/", "localhost")[0] == 421  # port 80 implied
    for good in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
        assert raw_get(port, "/", good)[0] == 200, good
    # The browser's own page (Origin = http://localhost:PORT) still opens a session.
    status, _ = raw_get(port, "/ws", f"localhost:{port}", {**ws, "Origin": f"http://localhost:{port}"})
    assert status == 101
    assert 'voicebot_refusals_total{reason="host"}' in get(server.base + "/metrics")[2]


@pytest.fixture(scope="module")
def long_session(tmp_path_factory) -> Path:
    """An audit log with 80 turns of 20 s user and bot audio (noise: FLAC barely compresses it), ~100 MB."""
    from bot.audit import AuditWriter
    from test_audit import BOT_SR, HEADER, SR, noise, turn_data

    w = AuditWriter.open(tmp_path_factory.mktemp("long-session"), HEADER, store_audio=True)
    for n in range(1, 81):
        w.record_turn(turn_data(n), user_audio=(noise(20.0, n), SR), bot_audio=(noise(20.0, 1000 + n, sr=BOT_SR), BOT_SR))
    w.close()
    return w.dir


def test_building_a_report_does_not_stall_live_sessions(server, long_session):
    """/report/<id> verifies the chain (hashing every clip) and base64-embeds the clips: for a long session
    that is seconds of work, and it ran on the event loop that paces every session's audio. Now it runs
    in a worker thread (the loop keeps ticking), and the page embeds a bounded amount of audio."""
    from bot.audit.report import report_html
    from bot.server.app import REPORT_AUDIO_BYTES

    t0 = time.monotonic()
    report_html(long_session)  # the whole report: what the old code built on the loop
    whole = time.monotonic() - t0
    assert whole > 0.6, f"the whole report took only {whole:.2f} s: too little work to show a stall"
    server.server.finished["long-session"] = long_session
    stop = threading.Event()

    async def ticker() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        worst, ticks = 0.0, 0
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            worst, ticks = max(worst, loop.time() - t - 0.01), ticks + 1
        return worst, ticks

    lag = asyncio.run_coroutine_threadsafe(ticker(), server.loop)
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        with urllib.request.urlopen(server.base + "/report/long-session", timeout=120) as r:
            status, page = r.status, r.read()  # bytes: decoding 30 MB here would hold the GIL too
        took = time.monotonic() - t0
    finally:
        stop.set()
        worst, ticks = lag.result(10)
        server.server.finished.pop("long-session", None)
    assert status == 200 and b"Turn 80" in page
    # The old code blocked the loop for the whole build (`whole`, ~1 s here); allow for a loaded 2-core
    # machine (a 30 MB string is still copied while holding the GIL a few times).
    assert worst < 0.3, f"event loop stalled {worst:.2f} s while a {took:.2f} s report was built"
    # Bounded: about REPORT_AUDIO_BYTES of clips (base64: 4/3) of the ~100 MB; the rest are named.
    assert len(page) < REPORT_AUDIO_BYTES * 4 / 3 + 4_000_000
    assert b"audio limit is used up" in page
    print(f"\nwhole report {whole:.2f} s; served {took:.2f} s, {len(page) / 1e6:.1f} MB; worst loop lag "
          f"{worst * 1000:.0f} ms over {ticks} ticks")
