"""`voicebot audit report`: one self-contained HTML page, checked as text and in a real headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from bot.audit import AuditWriter, verify
from bot.audit.report import CSP, SCRIPT, SCRIPT_HASH, report_html, write_report
from test_audit import BOT_SR, HEADER, SR, noise, rechain, sine, staged, turn_data, verdict

VOICEBOT = str(Path(sys.executable).parent / "voicebot")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED2'\"> & \"quotes\""


# --------------------------------------------------------------------------- helpers


def chromium(profile_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: scripts/setup.sh installs it (apt-get install -y chromium)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render(page: Path, tmp: Path, name: str = "report") -> tuple[str, Path]:
    """(DOM after the page's script ran and the audio loaded, screenshot path) from headless Chromium."""
    url = page.resolve().as_uri()
    dom = chromium(tmp / f"{name}-profile-dom", "--virtual-time-budget=8000", "--dump-dom", url)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    png = tmp / f"{name}.png"
    shot = chromium(tmp / f"{name}-profile-shot", "--virtual-time-budget=8000", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1280,2000", url)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    return dom.stdout, png


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decoded scanlines) of a PNG, without any imaging library."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(blob):
        length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
        chunk = blob[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def assert_real_screenshot(png: Path) -> None:
    width, height, distinct = png_facts(png)
    assert (width, height) == (1280, 2000), (width, height)
    assert png.stat().st_size > 20_000, png.stat().st_size  # a blank page compresses to a few KB
    assert distinct > 50, distinct  # text, colours and bars, not one flat colour


def turn_section(dom: str, n: int) -> str:
    m = re.search(rf'<section[^>]*id="turn-{n}".*?</section>', dom, re.S)
    assert m, f"turn {n} not in the page"
    return m.group(0)


def review_session(base: Path) -> Path:
    """A session with everything a reviewer must see: hostile text, blocks, a refusal, a barge-in, errors,
    a newer record type, and a turn the session stopped in."""
    w = AuditWriter.open(base, {**HEADER, "config": {"llm": {"provider": "scripted", "api_key_env": "X"}}})
    staged(w, 1)
    w.record_turn(turn_data(1, user={"transcript": EVIL, "audio": None, "start_s": 1.0, "end_s": 2.0},
                            bot={"start_s": 2.6, "end_s": 3.4}),
                  user_audio=(noise(0.6, 1), SR), bot_audio=(sine(0.8), BOT_SR))
    w.record("moderation.verdict", {"turn": 2, "stage": "input", "text": "something nasty", "verdict": verdict(False)})
    w.record_turn(turn_data(2, user={"transcript": "something nasty", "audio": None, "start_s": 5.0, "end_s": 6.0},
                            input_verdict=verdict(False), generated=[], output_verdicts=[],
                            spoken="Arr, I won't talk about that.", refused=True),
                  user_audio=(noise(0.4, 2), SR), bot_audio=(sine(0.5, 300), BOT_SR))
    gen = ["Here is a fine answer.", "Here is a rude remark."]
    w.record_turn(turn_data(3, generated=gen, output_verdicts=[verdict(True, gen[0]), verdict(False, gen[1])],
                            spoken="Here is a fine", interrupted=True, errors=["tts: voice glitch"]),
                  bot_audio=(sine(0.5, 400), BOT_SR))
    w.record("error", {"stage": "transport", "message": "audio device <vanished>"})
    w.record("custom.metric", {"turn": 3, "gpu_temp": 71})
    w.record("stt.final", {"turn": 4, "text": "and one more thing"})
    w.record("llm.sentence", {"turn": 4, "index": 0, "text": "Sure, the"})
    w.close()
    return w.dir


# --------------------------------------------------------------------------- the page as text


def test_report_escapes_log_content(tmp_path: Path) -> None:
    page = report_html(review_session(tmp_path))
    assert page.count("<script") == 1 and "<img" not in page  # only the report's own script, no injected tags
    assert html.escape(EVIL, quote=True) in page
    # Defence in depth: only the report's own script (by hash) may run; nothing may load from outside.
    assert f"script-src 'sha256-{SCRIPT_HASH}'" in CSP and "default-src 'none'" in CSP
    assert base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() == SCRIPT_HASH
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_report_shows_verdicts_markers_and_errors(tmp_path: Path) -> None:
    session = review_session(tmp_path)
    page = report_html(session)
    assert 'data-chain="ok"' in page and "Chain OK" in page
    assert "pirate" in page and "cd" * 32 in page and "SmolLM2-135M-Instruct" in page
    t1, t2, t3, t4 = (turn_section(page, n) for n in (1, 2, 3, 4))
    assert 'data-flags=""' in t1 and "BLOCKED" not in t1
    assert "input blocked" in t2 and "BLOCKED by input moderation" in t2 and "refused" in t2
    assert "something nasty" in t2 and "Arr, I won&#x27;t talk about that." in t2
    # The blocked sentence is shown to the reviewer, marked, next to the verdict that blocked it.
    assert re.search(r'<li class="blocked"><span class="said">Here is a rude remark\.</span>'
                     r'<span class="flag-label">BLOCKED by output moderation: not spoken', t3)
    assert "categories=harassment" in t3 and "cut at barge-in" in t3 and "tts: voice glitch" in t3
    assert "custom.metric" in t3
    assert "incomplete" in t4 and "and one more thing" in t4 and "Sure, the" in t4
    assert "audio device &lt;vanished&gt;" in page
    # latency bars for every turn with timings, scaled to the slowest stage of the session (v2v 650 ms)
    assert '<div class="bar v2v" data-timing="v2v_ms"><div style="width:100.00%"></div>' in t1
    assert '<div class="bar" data-timing="stt_ms"><div style="width:18.54%"></div>' in t1
    assert re.search(r'data-count="refused"><b>1</b>', page) and re.search(r'data-count="blocked"><b>2</b>', page)


def test_report_embeds_the_logged_audio(tmp_path: Path) -> None:
    session = review_session(tmp_path)
    page = report_html(session)
    clips = re.findall(r'<audio controls preload="metadata" data-clip="(user|bot)" src="data:audio/flac;base64,'
                       r'([A-Za-z0-9+/=]+)"', page)
    assert [who for who, _ in clips] == ["user", "bot", "user", "bot", "bot"]
    assert base64.b64decode(clips[0][1]) == (session / "audio/turn-0001-user.flac").read_bytes()
    assert "<audio" not in report_html(session, audio=False)


def test_tampered_log_renders_with_a_red_banner(tmp_path: Path) -> None:
    session = review_session(tmp_path)
    events = session / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b"something nasty", b"something nicer", 1))
    (session / "audio/turn-0002-bot.flac").write_bytes(b"not the audio that was played")
    page = report_html(session)
    banner = re.search(r'<div class="banner fail" id="chain" data-chain="failed" role="alert">(.*?)</div>', page, re.S)
    assert banner, "no red banner"
    assert "VERIFICATION FAILED" in banner.group(1) and "hash mismatch" in banner.group(1)
    assert "line 10 (seq 9, moderation.verdict)" in banner.group(1)
    assert "something nicer" in turn_section(page, 2)  # the page is still rendered
    assert "does NOT match the SHA-256 in the log" in turn_section(page, 2)


def test_audio_outside_the_session_is_not_embedded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.flac"
    secret.write_bytes(b"fLaC private")
    w = AuditWriter.open(tmp_path / "audits", HEADER)
    w.record_turn(turn_data(1))
    w.close()
    forged = {"file": "../../secret.flac", "sha256": hashlib.sha256(b"fLaC private").hexdigest()}
    rechain(w.dir, lambda recs: recs[1]["data"].update(bot_audio=forged))  # a consistent, forged chain
    assert "outside the session directory" in verify(w.dir).problems[0]
    page = report_html(w.dir)
    assert "refers outside the session folder: not embedded" in page
    assert base64.b64encode(b"fLaC private").decode() not in page


def test_killed_session_report(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    staged(w, 1)
    w.record("stt.final", {"turn": 2, "text": "half a"})
    w.close()
    events = w.dir / "events.jsonl"
    lines = events.read_bytes().split(b"\n")[:-2]  # drop session.end, like a kill -9
    events.write_bytes(b"\n".join(lines) + b"\n" + b'{"seq":99,"partial')
    page = report_html(w.dir)
    assert 'data-chain="ok"' in page and "last line incomplete" in page and "NOT ENDED" in page
    assert "incomplete" in turn_section(page, 2)


def test_cli_report(tmp_path: Path) -> None:
    session = review_session(tmp_path / "audits")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    out = tmp_path / "r.html"
    done = subprocess.run([VOICEBOT, "audit", "report", str(session), "-o", str(out)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert f"report written to {out} (chain OK: " in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # transcripts and audio: private like the log
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    missing = subprocess.run([VOICEBOT, "audit", "report", str(tmp_path / "nope")], capture_output=True,
                             text=True, timeout=120, env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().startswith("error: no audit log at")


# --------------------------------------------------------------------------- in a real browser


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    session = review_session(tmp_path / "audits")
    page = write_report(session, tmp_path / "report.html")
    dom, png = render(page, tmp_path)

    # The page's own script ran (CSP allows it by hash); the transcript's did not, it is text.
    assert '<html lang="en" data-ready="yes">' in dom
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert html.escape("<script>document.title='PWNED'</script>", quote=False) in dom
    assert dom.count("<script") == 1 and "<img" not in dom
    # Every turn is there with its markers, and Chromium decoded every embedded FLAC clip.
    assert [int(n) for n in re.findall(r'<section class="turn[^"]*" id="turn-(\d+)"', dom)] == [1, 2, 3, 4]
    assert re.findall(r'data-flags="([^"]*)"', dom) == [
        "", "blocked refused", "blocked interrupted errors", "incomplete"]
    assert "BLOCKED by output moderation: not spoken" in turn_section(dom, 3)
    states = re.findall(r'<audio[^>]*data-state="(\w+)"', dom)
    assert states == ["ok"] * 5, states
    assert re.search(r'class="clip-state">0\.60 s<', turn_section(dom, 1))
    assert_real_screenshot(png)


def test_failed_verification_in_headless_chromium(tmp_path: Path) -> None:
    session = review_session(tmp_path / "audits")
    (session / "audio/turn-0001-user.flac").unlink()
    assert not verify(session).ok
    dom, png = render(write_report(session, tmp_path / "broken.html"), tmp_path, "broken")
    assert re.search(r'class="banner fail" id="chain" data-chain="failed" role="alert">VERIFICATION FAILED', dom)
    assert "audio/turn-0001-user.flac: missing" in dom and "file missing" in turn_section(dom, 1)
    assert_real_screenshot(png)
