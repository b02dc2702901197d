"""SIGTERM is handled exactly like SIGINT (bot/signals.py): real processes, real signals.

The helper on its own (cheap: a few lines of asyncio in a child process), then `voicebot run --input` with
the real models: each signal ends it within 2 s, with `session.end` in a verifying audit log, the reply
written, and exit 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO

CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from bot.signals import Stop, run_until_stopped, install, Interrupted

    mode = sys.argv[1]
    install()

    async def main(stop: Stop):
        print("READY", flush=True)
        try:
            if mode == "graceful":
                await stop.requested.wait()
                await asyncio.sleep(0.1)  # a clean stop takes a moment
                return "returned"
            await asyncio.sleep(3600)  # "cancel" and "stuck": only a cancellation ends this
        finally:
            if mode == "stuck":
                await asyncio.sleep(0.3)  # cleanup still runs after the cancel
            print("CLEANUP", flush=True)

    try:
        if mode == "sync":
            print("READY", flush=True)
            time.sleep(3600)  # model loading, say: no event loop
        stop = Stop()
        result = run_until_stopped(main, grace_secs=0.5, stop=stop)
        print("RESULT", result, stop.exit_code, flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt as exc:  # Interrupted is one
        from bot.signals import exit_code_for
        print("INTERRUPTED", type(exc).__name__, flush=True)
        sys.exit(exit_code_for(exc))
""")


def _child(mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("mode", ["cancel", "graceful", "sync"])
def test_both_signals_end_the_helper_alike(sig, mode):
    proc = _child(mode)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 128 + sig, out
    assert elapsed < 2.0
    if mode == "graceful":
        assert f"RESULT returned {128 + sig}" in out  # it stopped on its own, within the grace period
    else:
        assert "INTERRUPTED Interrupted" in out
    if mode != "sync":
        assert "CLEANUP" in out


def test_second_signal_cancels_a_graceful_stop_at_once_and_a_third_exits():
    proc = _child("stuck")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # no waiting for the 0.5 s grace period
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 143 and "CLEANUP" in out  # exit code of the first signal

    proc = _child("stuck")
    t0 = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGTERM):
        proc.send_signal(sig)
        time.sleep(0.05)
    proc.communicate(timeout=10)
    assert proc.returncode == 143 and time.monotonic() - t0 < 0.5


# --- the real command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_question(tmp_path_factory, piper):
    """A question, then 40 s of silence: the session is still running when the signal comes."""
    import numpy as np
    import soundfile as sf

    audio, rate = piper("What is the capital of France?")
    track = np.zeros(int(rate * 45), dtype=np.float32)
    track[int(rate * 0.5): int(rate * 0.5) + len(audio)] = audio
    path = tmp_path_factory.mktemp("signals") / "question.wav"
    sf.write(str(path), track, rate)
    return path


def _voicebot(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "bot.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_input_ends_cleanly_on_either_signal(tmp_path, long_question, sig):
    from bot.audit import verify

    reply = tmp_path / "reply.wav"
    audits = tmp_path / "audits"
    proc = _voicebot(["run", "-i", str(long_question), "-o", str(reply), "--set", f"audit.dir={audits}",
                      "--set", "llm.provider=scripted", "--set", 'llm.script=["Paris is the capital of France."]'],
                     tmp_path)
    assert proc.stdout is not None
    lines: list[str] = []
    answered = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "] bot:" in line:
                answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert answered.wait(120), "".join(lines) + proc.stderr.read()
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err
    assert elapsed < 2.0, f"stopped {elapsed:.2f} s after {signal.Signals(sig).name}"
    assert "Traceback" not in err and f"stopped ({signal.Signals(sig).name})" in err
    assert reply.is_file() and reply.stat().st_size > 44  # what the bot said is kept
    (session,) = audits.iterdir()
    result = verify(session)
    assert result.ok and result.ended, result.summary()
    last = json.loads((session / "events.jsonl").read_text().strip().splitlines()[-1])
    assert last["type"] == "session.end" and last["data"]["reason"] == "interrupted"
    print(f"\n{signal.Signals(sig).name} -> exit {proc.returncode} in {elapsed:.2f} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_drains_on_the_first_signal_and_stops_at_once_on_the_second(tmp_path, sig):
    """`voicebot serve` with a client that never leaves (it keeps streaming its mic) and the default 30 s
    drain: the first signal starts the drain at once (the client is told to reconnect, /healthz turns 503,
    new sessions are refused), the second closes the session at once: the process exits 143 (SIGTERM) or
    130 (SIGINT) within a few seconds and the session's audit log is closed and verifies."""
    import asyncio
    import re
    import urllib.error
    import urllib.request

    from bot.audit import verify
    from bot.server.client import VoiceClient

    audits = tmp_path / "audits"
    proc = _voicebot(["serve", "--port", "0", "--set", f"audit.dir={audits}", "--set", "llm.provider=scripted",
                      "--set", 'llm.script=["Paris is the capital of France."]'], tmp_path)
    assert proc.stdout is not None
    found: list[int] = []
    listening = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            m = re.search(r"listening on http://[^:]+:(\d+)/", line)
            if m:
                found.append(int(m.group(1)))
                listening.set()

    threading.Thread(target=read, daemon=True).start()

    def healthz(port: int) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    async def go(port: int):
        c = await VoiceClient(f"ws://127.0.0.1:{port}/ws").connect()
        await c.wait_session()

        async def mic() -> None:  # the client never hangs up
            while not c.closed.is_set():
                await c.send_silence(0.2)

        streaming = asyncio.create_task(mic())
        await asyncio.sleep(0.5)
        proc.send_signal(sig)
        deadline = time.monotonic() + 5
        while not c.log.of_type("drain") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        health = await asyncio.to_thread(healthz, port)
        late = await VoiceClient(f"ws://127.0.0.1:{port}/ws").connect()
        await asyncio.wait_for(late.closed.wait(), 10)
        still_open = not c.closed.is_set()
        t0 = time.monotonic()
        proc.send_signal(sig)
        await asyncio.wait_for(c.closed.wait(), 10)
        streaming.cancel()
        return c, late, health, still_open, t0

    try:
        assert listening.wait(180), proc.stderr.read() if proc.poll() is not None else "not listening"
        c, late, health, still_open, t0 = asyncio.run(go(found[0]))
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    # First signal: drain started at once.
    assert c.log.of_type("drain") and "reconnect" in c.log.of_type("drain")[0]["reason"], c.log.messages[-3:]
    assert health == 503
    assert late.log.close_code == 1012, (late.log.close_code, late.log.close_reason)
    assert still_open  # the 30 s drain was running: the client was not thrown out yet
    # Second signal: everything closed at once, conventional exit code, no traceback.
    assert c.log.close_code == 1001 and "server stopped" in c.log.close_reason, (c.log.close_code, c.log.close_reason)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert elapsed < 4.0, f"exited {elapsed:.2f} s after the second {signal.Signals(sig).name}"
    assert "Traceback" not in err and "draining" in err and f"stopped ({signal.Signals(sig).name})" in err, err[-2000:]
    (session,) = audits.iterdir()
    result = verify(session)
    assert result.ok and result.ended, result.summary()
    last = json.loads((session / "events.jsonl").read_text().strip().splitlines()[-1])
    assert last["type"] == "session.end", last
    print(f"\nsecond {signal.Signals(sig).name} -> exit {proc.returncode} in {elapsed:.2f} s")
