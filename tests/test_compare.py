"""``voicebot compare``: the same spoken question through the cascade and the realtime mode (against the local
protocol-faithful fake in tests/fake_realtime.py), a variant whose server is down, one report.

Nothing here talks to a real service. The cascade uses the scripted LLM so the answer is known.
"""

import asyncio
import json
import re
import socket

import pytest

from bot.compare.inputs import resolve_inputs
from bot.compare.report import report_html, summary_table, write_outputs
from bot.compare.results import TurnOutcome, Verdict, aggregate, agreements, percentile, word_error_rate
from bot.compare.results import VariantResult
from bot.compare.runner import BaseConfig, run_comparison
from bot.compare.variants import Variant, build_variants, parse_variant
from bot.errors import VoicebotError
from conftest import word_recall
from test_audit_report import assert_real_screenshot, render
from fake_realtime import FakeRealtimeServer, Reply, Scenario

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
UNSAFE = "Paris is lovely. You are a stupid worthless idiot."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_variants_parse_and_reject():
    v = parse_variant("big llm:llm.provider=openai;llm.temperature=0.2")
    assert v.name == "big llm" and v.overrides == {"llm.provider": "openai", "llm.temperature": 0.2}
    assert v.slug == "big-llm"
    names = [x.name for x in build_variants(["pipeline", "realtime"], ["x:moderation.output.enabled=false"])]
    assert names == ["pipeline", "realtime", "x"]
    with pytest.raises(VoicebotError, match="nothing to compare"):
        build_variants(None, None)
    with pytest.raises(VoicebotError, match="named"):
        build_variants(["pipeline"], ["pipeline:mode=pipeline"])
    with pytest.raises(VoicebotError, match="not found"):
        parse_variant("a=/nonexistent/x.toml")
    with pytest.raises(VoicebotError, match="key=value"):
        parse_variant("a:novalue")


def _turn(inp, idx, outcome, played, v2v=None, **kw):
    return TurnOutcome(input=inp, index=idx, audit_turn=idx, heard="q", generated=[played or ""], played=played,
                       input_verdict=None, output_verdicts=kw.pop("verdicts", []), refused=outcome == "refused",
                       blocked=outcome == "blocked", held_back=kw.pop("held_back", False),
                       leaked_ms=kw.pop("leaked_ms", None), interrupted=False, outcome=outcome,
                       timings={} if v2v is None else {"v2v_ms": v2v}, **kw)


def test_aggregates_agreement_and_wer():
    a = [_turn("q", 1, "answered", "Paris is the capital", 700), _turn("q", 2, "refused", "I can't help", 300),
         _turn("q", 3, "answered", "It is sunny", 900)]
    b = [_turn("q", 1, "answered", "the capital is Paris", 400),
         _turn("q", 2, "blocked", "Sorry", 350, held_back=True, leaked_ms=0.0,
               verdicts=[Verdict(allowed=False, categories=["harassment"], text="x")])]
    agg = aggregate(a)
    assert (agg.turns, agg.answered, agg.refused, agg.blocked) == (3, 2, 1, 0)
    assert agg.v2v_p50_ms == 700 and agg.v2v_p95_ms == 900  # refused turns don't count in answer latency
    assert aggregate(b).held_back == 1 and aggregate(b).leaked_ms == 0.0
    ra = VariantResult(variant=Variant(name="a"), turns=a)
    rb = VariantResult(variant=Variant(name="b"), turns=b)
    [ag] = agreements([ra, rb])
    assert ag.turns == 2 and ag.same_outcome == 0.5 and ag.reply_similarity == pytest.approx((1.0 + 0.0) / 2)
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([], 50) is None
    assert word_error_rate("What is the capital of France?", "what is the capitol of france") == pytest.approx(1 / 6)


def test_inputs(tmp_path):
    (tmp_path / "rec").mkdir()
    for name in ("b.wav", "a.flac", "notes.md"):
        (tmp_path / "rec" / name).write_bytes(b"x")
    (tmp_path / "rec" / "a.txt").write_text("hello there\n")
    items = resolve_inputs([tmp_path / "rec"])
    assert [(i.name, i.reference) for i in items] == [("a", "hello there"), ("b", None)]
    with pytest.raises(VoicebotError, match="does not exist"):
        resolve_inputs([tmp_path / "missing.wav"])
    with pytest.raises(VoicebotError, match="not a recording"):
        resolve_inputs([tmp_path / "rec" / "notes.md"])


def test_compare_cascade_realtime_and_a_down_server(make_speech, tmp_path, transcriber):
    """One question, three variants: the cascade, realtime on the fake server (its answer's second sentence
    fails output moderation and is held back), realtime at a port nobody listens on (skipped)."""
    q = make_speech([(0.3, QUESTION)])
    (q.with_suffix(".txt")).write_text(QUESTION)
    dead = f"http://127.0.0.1:{free_port()}/v1"

    async def go():
        scenario = Scenario(transcripts=[QUESTION], replies=[Reply(text=UNSAFE)])
        async with FakeRealtimeServer(scenario) as fake:
            variants = build_variants(["pipeline"], [f"realtime:mode=realtime;realtime.base_url={fake.base_url}",
                                                     f"down:mode=realtime;realtime.base_url={dead}"])
            base = BaseConfig(overrides={"llm.provider": "scripted", "llm.script": [ANSWER]})
            result = await run_comparison(variants, resolve_inputs([q]), base, tmp_path / "cmp")
            return result, fake

    import os
    os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-real-key")
    result, fake = asyncio.run(go())
    assert fake.problems == []
    cascade, realtime, down = result.variants
    assert cascade.status == "ok" and cascade.mode == "pipeline", cascade.reason
    assert realtime.status == "ok" and realtime.mode == "realtime", realtime.reason
    assert down.status == "skipped" and down.reason and "127.0.0.1" in down.reason, down
    assert down.turns == [] and down.aggregates.turns == 0

    [ct] = cascade.turns
    assert ct.outcome == "answered" and ct.played == ANSWER and ct.v2v_ms and ct.v2v_ms > 0
    assert ct.wer is not None and ct.wer <= 0.34
    assert ct.bot_audio is not None and ct.bot_audio.is_file()
    [rt] = realtime.turns
    assert rt.outcome == "blocked" and rt.held_back and rt.leaked_ms == 0.0  # strict hold-back: nothing leaked
    assert "idiot" not in (rt.played or "")
    assert realtime.aggregates.leaked_ms == 0.0 and realtime.aggregates.held_back == 1
    for r in (cascade, realtime):
        [s] = r.sessions
        assert s.verified and s.head and s.audit_dir.is_dir()
    [ag_cr] = result.agreement  # the skipped variant is not compared
    assert ag_cr.a == "pipeline" and ag_cr.b == "realtime" and ag_cr.turns == 1 and ag_cr.same_outcome == 0.0

    # What realtime played really has no insult in it: transcribe its reply audio.
    heard = transcriber(realtime.sessions[0].reply_wav)
    assert "idiot" not in heard.lower() and "stupid" not in heard.lower(), heard

    html_path, json_path = write_outputs(result, tmp_path / "cmp")
    data = json.loads(json_path.read_text())
    assert [v["status"] for v in data["variants"]] == ["ok", "ok", "skipped"]
    assert data["variants"][1]["turns"][0]["leaked_ms"] == 0.0
    table = summary_table(result)
    assert "skipped" in table and "pipeline" in table and "realtime" in table
    page = html_path.read_text()
    assert page.count("data:audio/flac;base64,") >= 2 and "Content-Security-Policy" in page
    assert (json_path.stat().st_mode & 0o077) == 0

    # The page in real headless Chromium: every variant and turn is there and every clip decodes.
    dom, png = render(html_path, tmp_path, "compare")
    assert '<html lang="en" data-ready="yes">' in dom
    assert re.findall(r'<tr data-variant="([^"]+)"', dom) == ["pipeline", "realtime", "down"]
    states = re.findall(r'<audio[^>]*data-state="(\w+)"', dom)
    assert len(states) == 3 and set(states) == {"ok"}, states  # the input and the two replies
    assert_real_screenshot(png)


def test_report_escapes_text(tmp_path):
    from bot.compare.results import Comparison

    evil = "<script>alert(1)</script>"
    turn = _turn("q", 1, "answered", evil, 500)
    comp = Comparison(created="now", persona="default", inputs=[],
                      variants=[VariantResult(variant=Variant(name="a"), turns=[turn], reason=evil)])
    page = report_html(comp)
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.lower().count("<script") == 1  # the report's own, allowed by its hash in the CSP


def test_sigterm_stops_compare_with_its_audit_log_closed(make_speech, tmp_path):
    """SIGTERM mid-comparison: exit 143 within 2 s of the signal, and the running variant's audit log ends with
    session.end and verifies (what was recorded is kept)."""
    import signal
    import subprocess
    import sys
    import time

    from bot.audit import verify
    from conftest import REPO

    q = make_speech([(0.3, QUESTION), (6.0, "And how many people live there?")], total_secs=14.0)
    out = tmp_path / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "compare", "-i", str(q), "--mode", "pipeline",
                             "--out-dir", str(out), "--set", "llm.provider=scripted",
                             "--set", f'llm.script=["{ANSWER}"]'], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    audit_root = out / "pipeline" / "audit"

    def answered() -> bool:  # the first turn is in the log: the session is well under way
        logs = list(audit_root.glob("*/events.jsonl")) if audit_root.is_dir() else []
        return bool(logs) and '"type":"turn"' in logs[0].read_text().replace(" ", "")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not answered():
        time.sleep(0.2)
    assert answered(), proc.stderr.read() if proc.poll() is not None else "no turn logged in time"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err[-2000:]
    assert time.monotonic() - t0 < 2.0
    [session] = list(audit_root.iterdir())
    result = verify(session)
    assert result.ok and result.ended, result.summary()
    assert "Traceback" not in err
