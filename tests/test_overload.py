"""Bounded under overload (bot/transports/overload.py), reproduced as issue 11 saw it.

A capture device that delivers faster than real time: an ALSA ``file`` PCM reading a regular file (the
``null`` slave has no clock, so PortAudio gets blocks as fast as it asks; at the end of the file the plugin
re-delivers the last period forever; see tests/test_local_audio.py). Before the fix ``voicebot run`` grew
without bound (12 GB in 10 minutes) and ignored SIGINT and SIGTERM: the PortAudio thread flooded the event
loop's self-pipe with wake-ups, so the signal's byte was lost. Now the oldest audio is dropped (a warning,
``audio.dropped`` in the audit log), memory stays flat, and SIGTERM ends the session within 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

ASOUNDRC = """
pcm.vmic {{ type file slave.pcm "null" file "/dev/null" infile "{mic}" format "raw" }}
pcm.vspk {{ type file slave.pcm "null" file "/dev/null" format "raw" }}
pcm.!default {{ type asym playback.pcm "vspk" capture.pcm "vmic" }}
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_a_device_faster_than_real_time_is_bounded_and_sigterm_still_stops_it(tmp_path):
    pytest.importorskip("sounddevice")
    from bot.audit import verify

    home = tmp_path / "home"
    home.mkdir()
    mic = home / "mic.raw"  # a regular file: read as fast as the CPU goes
    (np.random.default_rng(1).standard_normal(44100) * 300).astype("<i2").tofile(mic)
    (home / ".asoundrc").write_text(ASOUNDRC.format(mic=mic))
    audits = tmp_path / "audits"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--set", "llm.provider=scripted",
                             "--set", 'llm.script=["Hello."]', "--set", f"audit.dir={audits}",
                             # keyword moderation only: the profanity model loads lazily (+100 MB over
                             # the first ~20 s), which is start-up, not what this test measures
                             "--set", 'moderation.input.backends=["keywords"]',
                             "--set", 'moderation.output.backends=["keywords"]'],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    listening = threading.Event()

    def read(stream, into):
        for line in stream:
            into.append(line)
            if "listening" in line:
                listening.set()

    for stream, into in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=read, args=(stream, into), daemon=True).start()
    try:
        assert listening.wait(180), "".join(out + err)
        time.sleep(3.0)  # past start-up allocations
        rss = []
        for _ in range(12):
            rss.append(_rss_mb(proc.pid))
            time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)
    stderr = "".join(err)
    print(f"\nRSS over 6 s of flooding: {rss[0]:.1f} -> {rss[-1]:.1f} MB; SIGTERM -> exit in {elapsed:.2f} s")
    # Before the fix: +9 MB/s here (+50 MB over these 6 s, growing for as long as it ran). Now flat.
    assert rss[-1] - rss[0] < 10, rss
    assert proc.returncode == 143, stderr[-2000:]
    assert elapsed < 2.0, f"stopped {elapsed:.2f} s after SIGTERM"
    assert "Traceback" not in stderr
    assert "warning: microphone: dropped the oldest" in stderr and "faster than real time" in stderr
    (session,) = audits.iterdir()
    result = verify(session)
    assert result.ok and result.ended, result.summary()
    records = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    drops = [r for r in records if r["type"] == "audio.dropped"]
    assert drops and all(d["data"]["source"] == "microphone" for d in drops)
    assert drops[-1]["data"]["total_secs"] > 30  # far more audio offered than the seconds that passed
    span = records[-1]["t"] - drops[0]["t"]
    assert len(drops) <= 2 + span / 5, [d["t"] for d in drops]  # rate-limited: not one record per block
    assert records[-1]["type"] == "session.end"


def test_ring_drops_the_oldest_and_reports_at_most_every_few_seconds():
    from bot.transports.overload import AudioRing, DropReporter

    reporter = DropReporter("microphone", every_secs=60)
    events = []
    reporter.listeners.append(events.append)
    wakes = []
    ring: AudioRing[int] = AudioRing(0.1, reporter, wake=lambda: wakes.append(1))
    for i in range(1000):  # 20 s of 20 ms blocks into a 0.1 s ring
        ring.put(i, 0.02)
    assert [ring.pop() for _ in range(len(ring))] == [995, 996, 997, 998, 999]  # the newest survive
    assert len(wakes) == 1  # one wake-up for the burst, not one per block
    assert len(events) == 1 and events[0].secs == pytest.approx(0.02)  # the first drop at once, then quiet
    reporter.flush()
    assert len(events) == 2 and events[1].total_secs == pytest.approx(995 * 0.02)
    assert events[1].reason == "input-faster-than-real-time"
