"""Audit logs of REAL sessions through the file transport (VAD, whisper, scripted LLM, Piper): they verify,
`audit show` and `audit report` agree with what happened, and a `voicebot run` killed with SIGKILL in the
middle of a turn leaves a verifiable prefix."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bot.audit import read_session, show, verify
from bot.audit.report import write_report
from conftest import word_recall
from test_audit_report import assert_real_screenshot, render, turn_section

VOICEBOT = str(Path(sys.executable).parent / "voicebot")
QUESTIONS = [(0.5, "What is the capital of France?"), (8.0, "And how many people live there?")]
ANSWERS = ["Paris is the capital of France.", "About two million people live in Paris."]
_RECORDED: dict[str, Path] = {}


def speech_file(path: Path, parts, piper, total_secs: float | None = None) -> Path:
    clips = [(start, *piper(text)) for start, text in parts]
    rate = clips[0][2]
    end = max(s + len(a) / rate for s, a, _ in clips) + 0.5
    track = np.zeros(int((total_secs or end) * rate), dtype=np.float32)
    for start, audio, _ in clips:
        i = int(start * rate)
        track[i:i + len(audio)] += audio[: len(track) - i]
    sf.write(str(path), track, rate, subtype="PCM_16")
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}


@pytest.fixture(scope="session")
def recorded_session(tmp_path_factory, piper) -> Path:
    """A real two-turn session (default persona, scripted LLM), recorded once for the session's tests."""
    if "dir" not in _RECORDED:
        from bot.config import load_settings
        from bot.persona import load_persona
        from bot.session import run_file

        tmp = tmp_path_factory.mktemp("recorded")
        question = speech_file(tmp / "two-questions.wav", QUESTIONS, piper)
        settings = load_settings(None, {"audit.dir": str(tmp / "audits"), "llm.provider": "scripted",
                                        "llm.script": ANSWERS})
        result = asyncio.run(run_file(settings, load_persona("default"), question, tmp / "reply.wav"))
        assert result.errors == [], result.errors
        assert [t.spoken_text for t in result.turns] == ANSWERS, [t.summary() for t in result.turns]
        _RECORDED["dir"] = result.audit_dir
    return _RECORDED["dir"]


def test_two_turn_session_verifies_and_reads_back(recorded_session: Path) -> None:
    result = verify(recorded_session)
    assert result.ok and result.warnings == [] and result.ended, result.problems
    assert (result.turns, result.audio_files) == (2, 4)

    s = read_session(recorded_session)
    assert s.header["persona"]["name"] == "Nova" and s.header["mode"] == "pipeline"
    assert s.header["models"]["llm"].startswith("scripted") and len(s.header["config_hash"]) == 64
    assert s.end["turns"] == 2 and s.end["reason"] == "ended"
    views = s.views()
    assert [v.number for v in views] == [1, 2] and all(v.complete for v in views)
    for view, (_, question), answer in zip(views, QUESTIONS, ANSWERS):
        assert word_recall(question, view.heard) >= 0.8, view.heard
        assert view.spoken == answer and not view.interrupted
        assert view.user_audio["sample_rate"] == 16000 and view.bot_audio["sample_rate"] == 24000
        assert view.start_s < view.end_s < view.bot_span[0] < view.bot_span[1]
        for key in ("stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "v2v_ms"):
            assert view.timings[key] is not None and view.timings[key] >= 0, key
        # the stored user audio is the question (whisper hears it again)
        audio, rate = sf.read(str(s.audio_path(view.user_audio)), dtype="float32")
        assert rate == 16000 and 1.0 < len(audio) / rate < 4.0

    text = show(recorded_session)
    assert "chain      OK: " in text and "ended      ended · 2 turns · 0 errors" in text
    for answer in ANSWERS:
        assert f'spoken     "{answer}"' in text


def test_report_of_a_real_session_in_chromium(recorded_session: Path, tmp_path: Path) -> None:
    page = write_report(recorded_session, tmp_path / "report.html")
    dom, png = render(page, tmp_path)
    assert 'data-chain="ok"' in dom and "Nova" in dom
    for n, answer in enumerate(ANSWERS, 1):
        section = turn_section(dom, n)
        assert answer in section
        assert re.findall(r'<audio[^>]*data-clip="(\w+)"[^>]*data-state="ok"', section) == ["user", "bot"]
        assert 'data-timing="v2v_ms"><div style="width:' in section
    assert re.findall(r'<a class="seg (user|bot)" href="#turn-(\d)"', dom) == [
        ("user", "1"), ("user", "2"), ("bot", "1"), ("bot", "2")]
    assert_real_screenshot(png)


def test_kill_9_during_a_turn_of_voicebot_run(tmp_path: Path, piper) -> None:
    long_reply = ("Let me tell you a very long story about the sea. " * 8).strip()
    question = speech_file(tmp_path / "long.wav", [(0.5, "Hello there, who are you?"),
                                                   (6.5, "Tell me a long story please.")], piper)
    audits = tmp_path / "audits"
    cmd = [VOICEBOT, "run", "-i", str(question), "-o", str(tmp_path / "reply.wav"),
           "--set", f"audit.dir={audits}", "--set", "llm.provider=scripted",
           "--set", "llm.script=" + json.dumps(["I am Nova, a voice assistant.", long_reply])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    before: bytes = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(audits.glob("*/events.jsonl"))
            if logs:
                before = logs[0].read_bytes()
                # turn 1 is logged and the bot has started on its long answer to turn 2
                if b'"type":"turn"' in before and b'"type":"bot.started_speaking"' in before.split(
                        b'"type":"turn"')[-1]:
                    break
            time.sleep(0.05)
        else:
            pytest.fail(f"voicebot run never reached turn 2 (rc={proc.poll()}): {proc.stderr.read()[-2000:]!r}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    (session,) = list(audits.iterdir())
    after = (session / "events.jsonl").read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    assert after.startswith(complete)  # nothing that was on disk before the kill changed

    result = verify(session)
    assert result.ok, result.problems
    assert not result.ended and any("no session.end" in w for w in result.warnings), result.warnings
    assert result.turns == 1 and result.audio_files == 2

    s = read_session(session)
    first, second = s.views()
    assert first.complete and first.spoken == "I am Nova, a voice assistant."
    assert not second.complete and word_recall("tell me a long story please", second.heard) >= 0.8
    assert s.end is None
    text = show(session)
    assert "NOT ENDED" in text and "Turn 2 · INCOMPLETE" in text
