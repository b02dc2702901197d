"""`voicebot replay`: a recorded session's user audio through another configuration, with a per-turn diff."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.audit import AuditWriter, read_session, show, verify
from bot.audit.report import write_report
from bot.errors import VoicebotError
from bot.replay import diff_sessions, format_diff, load_source
from conftest import word_recall
from test_audit import HEADER, SR, noise, turn_data, verdict
from test_audit_report import render, turn_section
from test_audit_sessions import ANSWERS, QUESTIONS, clean_env, recorded_session  # noqa: F401 - fixture

VOICEBOT = str(Path(sys.executable).parent / "voicebot")
PIRATE = ["Arr, Paris be the capital, matey! A fine port with many a tavern.", "Two million souls, arr."]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([VOICEBOT, *args], capture_output=True, text=True, timeout=timeout, env=clean_env())


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


# --------------------------------------------------------------------------- real replays


def test_replay_in_another_persona_diffs_the_reply(recorded_session: Path, tmp_path: Path) -> None:
    done = cli("replay", str(recorded_session), "--persona", "pirate", "--set", "llm.provider=scripted",
               "--set", "llm.script=" + json.dumps(PIRATE), "--out-dir", str(tmp_path / "replays"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replaying 2 turns of" in done.stderr and "replay turn 2:" in done.stderr
    diff = json.loads(done.stdout)
    original, replayed = diff["original"], diff["replay"]
    assert (original["persona"], replayed["persona"]) == ("Nova", "Captain Reed")
    assert original["verified"] and replayed["verified"] and replayed["ended"]
    header = read_session(recorded_session).header
    assert replayed["replay_of"] == header["session_id"] and original["config_hash"] != replayed["config_hash"]
    assert diff["changed_turns"] == 2 and diff["skipped"] == [] and diff["unmatched_replay_turns"] == []
    assert diff["errors"] == []

    for n, turn in enumerate(diff["turns"], 1):
        assert turn["original_turn"] == n and turn["replay_turns"] == [n]
        assert "reply" in turn["changed"]
        assert turn["original"]["spoken"] == ANSWERS[n - 1] and turn["replay"]["spoken"] == PIRATE[n - 1]
        # the same recorded audio was heard again
        assert word_recall(QUESTIONS[n - 1][1], turn["replay"]["transcript"]) >= 0.8, turn["replay"]["transcript"]
        assert word_recall(turn["original"]["transcript"], turn["replay"]["transcript"]) >= 0.8
        for key in ("v2v_ms", "stt_ms", "llm_ttft_ms"):
            t = turn["timings"][key]
            assert t["original"] is not None and t["replay"] is not None
            assert t["delta"] == pytest.approx(t["replay"] - t["original"], abs=0.11)

    # The new session is a normal audit log that says what it replays, and where each turn was fed.
    replay_dir = Path(replayed["dir"])
    assert replay_dir.parent == tmp_path / "replays" and verify(replay_dir).ok
    rs = read_session(replay_dir)
    assert rs.header["replay_of_dir"] == recorded_session.name and rs.header["replay_of_verified"] is True
    assert rs.header["replay_of_head"] == verify(recorded_session).head
    inputs = [r["data"] for r in rs.other if r["type"] == "replay.input"]
    assert [d["original_turn"] for d in inputs] == [1, 2]
    orig_turns = read_session(recorded_session).views()
    assert [d["original_audio_sha256"] for d in inputs] == [v.user_audio["sha256"] for v in orig_turns]
    # turn 2's audio was fed only after the new bot had finished its (longer) first answer
    first = rs.views()[0]
    assert inputs[1]["t"] > first.bot_span[1]
    assert f"replay of  {recorded_session.name} (head " in show(replay_dir)

    # The text diff, as `voicebot replay` prints it without --json (recomputed from the two logs).
    text = format_diff(diff_sessions(recorded_session, replay_dir))
    assert f"replay of {recorded_session.name} -> {replay_dir.name}" in text
    assert "persona Nova" in text and "persona Captain Reed" in text and "2 replayed · 2 changed" in text
    turn1 = text.split("Turn 1 -> replay turn 1")[1].split("Turn 2")[0]
    assert f'  reply      - "{ANSWERS[0]}"\n' in turn1 and f'             + "{PIRATE[0]}"\n' in turn1
    assert "latency    v2v " in turn1 and " ms -> " in turn1

    # The report of the replay names its original.
    dom, _ = render(write_report(replay_dir, tmp_path / "replay.html"), tmp_path, "replay")
    assert recorded_session.name in dom and "replay of" in dom and PIRATE[1] in turn_section(dom, 2)


def test_replay_with_the_embedded_llm_keeps_the_conversation(recorded_session: Path, tmp_path: Path) -> None:
    from bot.config import load_settings
    from bot.persona import load_persona
    from bot.replay import replay

    settings = load_settings(None, {"audit.dir": str(tmp_path / "replays"), "persona": "pirate",
                                    "llm.max_tokens": 30, "llm.temperature": 0.0})
    sessions = []
    result = asyncio.run(replay(settings, load_persona("pirate"), recorded_session, on_session=sessions.append,
                                reply_path=tmp_path / "replay-reply.wav"))
    assert result.errors == [] and verify(result.replay_dir).ok
    assert read_session(result.replay_dir).header["models"]["llm"].startswith("embedded")
    turns = result.diff["turns"]
    assert [t["replay_turns"] for t in turns] == [[1], [2]]
    for t in turns:
        assert t["replay"]["spoken"], t  # the model answered each replayed question
        assert "reply" in t["changed"]
    # One session: the second question reached the model with the first exchange in its context.
    roles = [m["role"] for m in sessions[0].result.context_messages if m["role"] in ("user", "assistant")]
    assert roles == ["user", "assistant", "user", "assistant"], roles
    assert (tmp_path / "replay-reply.wav").stat().st_size > 10_000


# --------------------------------------------------------------------------- refusals (no models load)


def test_replay_refuses_a_tampered_log_unless_forced(recorded_session: Path, tmp_path: Path) -> None:
    copy = tmp_path / recorded_session.name
    shutil.copytree(recorded_session, copy)
    events = copy / "events.jsonl"
    events.write_bytes(events.read_bytes().replace(b"capital", b"capitol", 1))
    assert not verify(copy).ok

    done = cli("replay", str(copy), "--set", "llm.provider=scripted", "--set", 'llm.script=["x"]',
               "--out-dir", str(tmp_path / "replays"), timeout=120)
    assert_one_line_error(done, "fails verification", "hash mismatch", "--force")
    assert not (tmp_path / "replays").exists()  # nothing ran

    source = load_source(copy, 16000, force=True)
    assert not source.verified and len(source.segments) == 2 and "hash mismatch" in source.problems[0]


def test_replay_without_audio_fails_clearly(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path / "audits", HEADER, store_audio=False)
    w.record_turn(turn_data(1), user_audio=(noise(0.5, 1), SR))
    w.close()
    done = cli("replay", str(w.dir), "--set", "llm.provider=scripted", "--set", 'llm.script=["x"]', timeout=120)
    assert_one_line_error(done, "has no user audio to replay", "audit.store_audio = false")

    w = AuditWriter.open(tmp_path / "audits", HEADER)  # audio on, but no clip came with the turn
    w.record_turn(turn_data(1))
    w.close()
    with pytest.raises(VoicebotError, match="has no user audio to replay"):
        load_source(w.dir, 16000)

    missing = cli("replay", str(tmp_path / "nope"), timeout=120)
    assert_one_line_error(missing, "no audit log at")


def test_load_source_segments(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record_turn({"turn": 0, "speaker": "bot", "user": None, "spoken": "Ahoy!"})  # greeting: not replayed
    w.record_turn(turn_data(1, user={"transcript": "one", "start_s": 1.0, "end_s": 2.0}),
                  user_audio=(noise(1.6, 1, sr=8000), 8000))
    w.record_turn(turn_data(2, user={"transcript": "two", "start_s": 4.0, "end_s": 5.0}, interrupted=True),
                  user_audio=(noise(1.6, 2), SR))
    w.record_turn(turn_data(3, user={"transcript": "three", "start_s": 6.5, "end_s": 7.0}),
                  user_audio=(noise(1.1, 3), SR))
    w.record_turn(turn_data(4))  # no audio for this one
    w.record("stt.final", {"turn": 5, "text": "cut off"})
    w.close()
    source = load_source(w.dir, 16000)
    assert source.verified and [s.original_turn for s in source.segments] == [1, 2, 3]
    one, two, three = source.segments
    assert len(one.samples) == pytest.approx(1.6 * 16000, abs=50)  # resampled to the pipeline rate
    assert one.samples.dtype == np.float32 and one.audio_file == "audio/turn-0001-user.flac"
    assert (one.clip_start, two.clip_start) == pytest.approx((0.7, 3.7))
    assert two.interrupted and two.onset_to_next == pytest.approx(2.5) and three.onset_to_next is None
    assert [n for n, _ in source.skipped] == [4, 5]
    assert "no user audio" in source.skipped[0][1] and "incomplete" in source.skipped[1][1]


# --------------------------------------------------------------------------- the diff (logs only)


def test_diff_matches_turns_and_reports_verdict_and_latency_changes(tmp_path: Path) -> None:
    orig = AuditWriter.open(tmp_path / "a", HEADER)
    orig.record_turn(turn_data(1, user={"transcript": "hello", "start_s": 0.8, "end_s": 1.5}, generated=["Hi."],
                                output_verdicts=[verdict(True, "Hi.")], spoken="Hi."))
    orig.record_turn(turn_data(2, user={"transcript": "tell me about swords", "start_s": 5.0, "end_s": 6.0},
                                generated=["Swords are sharp."], output_verdicts=[verdict(True, "Swords are sharp.")],
                                spoken="Swords are sharp.", input_verdict=None))
    orig.close()
    rep = AuditWriter.open(tmp_path / "b", {**HEADER, "persona": {"name": "Captain Reed"}, "replay_of": "abc123"})
    rep.record("replay.input", {"original_turn": 1, "t": 0.5})
    rep.record_turn(turn_data(1, user={"transcript": "Hello.", "start_s": 0.7, "end_s": 1.4}, generated=["Ahoy."],
                               output_verdicts=[verdict(True, "Ahoy.")], spoken="Ahoy.",
                               timings={"v2v_ms": 900.0, "stt_ms": 100.0, "llm_ttft_ms": 20.0}))
    rep.record("replay.input", {"original_turn": 2, "t": 4.0})
    rep.record_turn(turn_data(2, user={"transcript": "tell me", "start_s": 4.2, "end_s": 4.6}, generated=[],
                               output_verdicts=[], spoken=""))
    bad = "I'll cut you to pieces."
    rep.record_turn(turn_data(3, user={"transcript": "about swords", "start_s": 5.4, "end_s": 6.0}, generated=[bad],
                               output_verdicts=[verdict(False, bad, categories=["violence"])],
                               spoken="Arr, that be not a thing I'll speak of, matey.", refused=True))
    rep.close()

    diff = diff_sessions(orig.dir, rep.dir)
    assert diff["replay"]["replay_of"] == "abc123" and diff["changed_turns"] == 2
    t1, t2 = diff["turns"]
    assert t1["replay_turns"] == [1] and t1["changed"] == ["reply"]
    assert t1["timings"]["v2v_ms"] == {"original": 650.0, "replay": 900.0, "delta": 250.0}
    assert t1["timings"]["llm_ttft_ms"]["delta"] == -280.0
    assert t2["replay_turns"] == [2, 3]  # the VAD split the question in two
    assert t2["replay"]["transcript"] == "tell me about swords" and "transcript" not in t2["changed"]
    assert set(t2["changed"]) == {"reply", "input verdict", "output verdict", "refused"}
    assert t2["replay"]["output_verdict"] == {"allowed": False, "categories": ["violence"], "blocked": [bad]}

    text = format_diff(diff)
    assert "Turn 2 -> replay turns 2, 3" in text
    assert '  transcript ~ "hello"   (same words; replay heard "Hello.")' in text  # whisper's case/punctuation
    assert '  transcript = "tell me about swords"' in text
    assert "  input      - not checked\n             + allowed" in text
    assert f'  output     - allowed\n             + BLOCKED (violence) on "{bad}"' in text
    assert "  refused    - no\n             + yes" in text
    assert "v2v 650 ms -> 900 ms (+250 ms)" in text and "llm_ttft 300 ms -> 20 ms (-280 ms)" in text


def test_audio_deleted_on_request_is_skipped_and_reported(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record_turn(turn_data(1), user_audio=(noise(0.5, 1), SR))
    w.record_turn(turn_data(2, user={"transcript": "two", "start_s": 4.0, "end_s": 5.0}),
                  user_audio=(noise(0.5, 2), SR))
    w.flush()
    gone = read_session(w.dir).views()[0].user_audio
    (w.dir / gone["file"]).unlink()
    w.record("privacy.forget", {"deleted": [{"path": gone["file"], "sha256": gone["sha256"], "turn": 1}]})
    w.close()
    # force: whether verify accepts the deleted file is privacy.forget's business (bot/audit/verify.py)
    source = load_source(w.dir, 16000, force=True)
    assert [s.original_turn for s in source.segments] == [2]
    assert source.skipped == [(1, "user audio deleted on request (privacy.forget)")]
    from bot.audit.report import report_html

    assert "deleted on request (privacy.forget)" in turn_section(report_html(w.dir), 1)
