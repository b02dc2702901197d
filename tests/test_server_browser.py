"""The browser client at / in real headless Chromium: a fake microphone plays a synthesized question, the
page talks to `voicebot serve` over /ws, and the audio the page played transcribes back to the reply the
server logged. Driven over the DevTools protocol with `websockets` (no browser automation package)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import websockets

from bot.audit.read import read_session
from conftest import word_recall
from test_server import REPLY, ServerThread, make_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UNSAFE = "Shut up, you stupid fucking idiot."
"""The scripted reply's last sentence: output moderation blocks it, the pirate's refusal is spoken instead."""


class Page:
    """One Chromium tab over CDP."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params):
        i = next(self.ids)
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})

    async def js(self, expression: str, *, gesture: bool = False):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True, userGesture=gesture)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")


def launch(tmp: Path, url: str, mic: Path) -> tuple[subprocess.Popen, int]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: scripts/setup.sh installs it (apt-get install -y chromium)")
    profile = tmp / "profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
         f"--use-file-for-fake-audio-capture={mic}", "--use-fake-ui-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--remote-allow-origins=*", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("Chromium did not start its DevTools endpoint")
        time.sleep(0.1)
    return proc, int(port_file.read_text().split()[0])


def page_ws_url(port: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise AssertionError("no page target")


def test_browser_client_speaks_and_shows_the_turn(tmp_path, piper, transcriber):
    audio, rate = piper("What is the capital of France?")
    audio = soxr.resample(audio, rate, 48000).astype(np.float32)
    # Chromium plays the file from when the page opens the mic, in a loop: 6 s of silence (the session
    # starts meanwhile; the page sends nothing before it is ready), the question, then silence longer than
    # the test.
    mic = tmp_path / "q.wav"
    sf.write(str(mic), np.concatenate([np.zeros(48000 * 6, np.float32), 0.8 * audio,
                                       np.zeros(48000 * 40, np.float32)]),
             48000, subtype="PCM_16")
    srv = ServerThread(make_settings(tmp_path, [f"{REPLY} {UNSAFE}"]))
    proc = None
    try:
        proc, port = launch(tmp_path, srv.base + "/?persona=pirate", mic)

        async def drive():
            async with websockets.connect(page_ws_url(port), max_size=None) as ws:
                page = Page(ws)
                await page.call("Runtime.enable")
                deadline = time.monotonic() + 20
                while not await page.js("!!(document.getElementById('start') && document.getElementById('start').onclick)"):
                    assert time.monotonic() < deadline, "page did not load"
                    await asyncio.sleep(0.2)
                await page.js("document.getElementById('start').click()", gesture=True)
                deadline = time.monotonic() + 60
                while True:
                    turns = await page.js("JSON.stringify(voicebot.events.filter(m => m.type === 'turn'))")
                    if json.loads(turns):
                        break
                    status = await page.js("document.getElementById('status').textContent")
                    assert time.monotonic() < deadline, f"no turn in the page; status: {status}"
                    await asyncio.sleep(0.5)
                samples = await page.js("voicebot.playedSamples()")
                rate = await page.js("voicebot.playedRate")
                session = await page.js("JSON.stringify(voicebot.session)")
                dom = await page.js("document.getElementById('log').innerText")
                wire = await page.js("JSON.stringify(voicebot.events)")
                marked = await page.js("Array.from(document.querySelectorAll('.verdict, .refused'))"
                                       ".map(e => e.textContent).join(' | ')")
                report = await page.js("document.getElementById('report').href")
                return json.loads(turns)[0], np.array(samples, dtype=np.float32) / 32768.0, rate, \
                    json.loads(session), dom, report, wire, marked

        turn, played, rate, session, dom, report, wire, marked = asyncio.run(drive())
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        srv.stop()
    assert session["persona"] == "Captain Reed"
    assert word_recall("capital of France", turn["user"]) >= 0.6, turn
    refusal = "Arr, that be not a thing I'll speak of, matey."
    assert turn["said"] == f"{REPLY} {refusal}" and turn["refused"]
    # The page shows the turn: what was heard, what was said, the blocked piece marked, its latency.
    assert "capital" in dom.lower() and "Paris is the capital" in dom and "voice-to-voice" in dom
    assert re.search(r"a reply sentence was blocked \([a-z, ]+\)", marked), marked  # with its categories
    assert "[refusal: moderation blocked part of this turn]" in marked
    # The blocked sentence never reached the browser, not even as text.
    assert "idiot" not in wire and "fucking" not in wire and "idiot" not in dom
    assert report.endswith(session["report"])
    # What the page played is the reply the server logged.
    assert len(played) / rate > 2.0
    heard = transcriber(soxr.resample(played, rate, 16000))
    assert word_recall(f"{REPLY} {refusal}", heard) >= 0.7, heard
    assert "idiot" not in heard.lower()
    views = [v for v in read_session(srv.server.finished[session["id"]]).views() if v.complete]
    assert views and views[0].spoken == turn["said"]
