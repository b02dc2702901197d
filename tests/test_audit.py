"""Audit log: writing, verifying (incl. tampering and kill -9), privacy, non-blocking writes, show."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bot.audit import SCHEMA_VERSION, AudioClip, AuditWriter, read_session, show, verify
from bot.audit import writer as writer_mod
from bot.audit.chain import GENESIS, canonical, record_hash, seal
from bot.errors import VoicebotError

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
BOT_SR = 22050
HEADER = {
    "voicebot_version": "0.1.0",
    "mode": "pipeline",
    "persona": {"name": "pirate", "sha256": "ab" * 32},
    "config_hash": "cd" * 32,
    "models": {"stt": "whisper tiny.en", "llm": "SmolLM2-135M-Instruct", "tts": "piper en_US-joe-medium"},
}


# --------------------------------------------------------------------------- helpers


def sine(seconds: float, freq: float = 220.0, sr: int = BOT_SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, int(seconds * sr), dtype=np.int16)


def verdict(allowed: bool = True, text: str | None = None, **extra) -> dict:
    v = {"allowed": allowed, "action": "allow" if allowed else "refuse",
         "categories": [] if allowed else ["harassment"], "scores": {"harassment": 0.01 if allowed else 0.93},
         "backend": "blocklist", "reason": "" if allowed else "matched blocklist term", "latency_ms": 1.5,
         "backends": [{"backend": "blocklist", "allowed": allowed}]}
    if text is not None:
        v["text"] = text
    v.update(extra)
    return v


def turn_data(n: int, **over) -> dict:
    generated = over.pop("generated", [f"Answer {n}, part one.", f"Answer {n}, part two."])
    data = {
        "turn": n, "speaker": "user",
        "user": {"transcript": f"question number {n}", "audio": None, "start_s": 1.5 * n, "end_s": 1.5 * n + 0.8},
        "input_verdict": verdict(True),
        "generated": generated,
        "output_verdicts": [verdict(True, g) for g in generated],
        "spoken": " ".join(generated), "interrupted": False, "refused": False, "bot_audio": None,
        "timings": {"stt_ms": 120.5, "llm_ttft_ms": 300.0, "tts_ttfa_ms": 80.0, "v2v_ms": 650.0},
        "errors": [],
    }
    data.update(over)
    return data


def staged(w: AuditWriter, n: int) -> None:
    w.record("user.started_speaking", {"turn": n})
    w.record("user.stopped_speaking", {"turn": n})
    w.record("stt.final", {"turn": n, "text": f"question number {n}"})
    w.record("moderation.verdict", {"turn": n, "stage": "input", "text": f"question number {n}",
                                    "verdict": verdict(True)})
    w.record("llm.sentence", {"turn": n, "index": 0, "text": f"Answer {n}, part one."})
    w.record("bot.started_speaking", {"turn": n})
    w.record("bot.stopped_speaking", {"turn": n})


STAGED_PER_TURN = 7


def write_session(base: Path, turns: int = 3, store_audio: bool = True) -> Path:
    w = AuditWriter.open(base, HEADER, store_audio=store_audio)
    for n in range(1, turns + 1):
        staged(w, n)
        w.record_turn(turn_data(n), user_audio=(noise(0.5, n), SR), bot_audio=(sine(0.4, 200 + 50 * n), BOT_SR))
    w.close()
    return w.dir


def lines_of(session: Path) -> list[bytes]:
    raw = (session / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    return raw.split(b"\n")[:-1]


def put_lines(session: Path, lines: list[bytes], trailing_newline: bool = True) -> None:
    (session / "events.jsonl").write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))


def records(session: Path) -> list[dict]:
    return [json.loads(line) for line in lines_of(session)]


def line_no(session: Path, type_: str, turn: int | None = None) -> int:
    """1-based line number of the first record of ``type_`` (for ``turn``)."""
    for i, rec in enumerate(records(session), 1):
        if rec["type"] == type_ and (turn is None or rec["data"].get("turn") == turn):
            return i
    raise AssertionError(f"no {type_} record")


def rechain(session: Path, mutate) -> None:
    """Rewrite the log with ``mutate(records)`` applied and a freshly computed, valid chain."""
    recs = records(session)
    mutate(recs)
    prev, out = GENESIS, []
    for seq, rec in enumerate(recs):
        sealed = seal(seq, rec["time"], rec["t"], rec["type"], rec["data"], prev)
        prev = sealed["hash"]
        out.append(canonical(sealed))
    put_lines(session, out)


@pytest.fixture
def session(tmp_path: Path) -> Path:
    return write_session(tmp_path / "audits")


# --------------------------------------------------------------------------- a clean session


def test_clean_session_verifies_with_counts(session: Path) -> None:
    result = verify(session)
    assert result.ok, result.problems
    assert result.problems == [] and result.warnings == []
    assert result.records == 1 + 3 * (STAGED_PER_TURN + 1) + 1
    assert result.turns == 3
    assert result.audio_files == 6
    assert result.ended and result.schema_version == SCHEMA_VERSION
    assert result.head == records(session)[-1]["hash"]
    assert result.summary().startswith("chain OK: 26 records, 3 turns, 6 audio files verified")


def test_directory_name_and_record_format(session: Path) -> None:
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", session.name)
    recs = records(session)
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert recs[0]["prev_hash"] == GENESIS
    for prev, rec in zip([None, *recs], recs):
        assert list(rec) == sorted(rec)  # canonical: sorted keys, no spaces
        assert set(rec) == {"seq", "time", "t", "type", "data", "prev_hash", "hash"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"])
        assert isinstance(rec["t"], float)
        assert rec["hash"] == record_hash(rec)
        if prev is not None:
            assert rec["prev_hash"] == prev["hash"]
            assert rec["t"] >= prev["t"]
    for raw, rec in zip(lines_of(session), recs):
        assert raw == canonical(rec)
    start, end = recs[0], recs[-1]
    assert start["type"] == "session.start" and start["t"] == 0.0
    assert start["data"]["schema_version"] == SCHEMA_VERSION
    assert start["data"]["session_id"] == session.name.split("-")[-1]
    assert {k: start["data"][k] for k in HEADER} == HEADER
    assert "python" in start["data"]["platform"]
    assert end["type"] == "session.end"
    assert end["data"] == {"reason": "ended", "turns": 3, "errors": 0}


def test_audio_files_match_refs_and_samples(session: Path) -> None:
    turns = [r["data"] for r in records(session) if r["type"] == "turn"]
    for n, turn in enumerate(turns, 1):
        user_ref, bot_ref = turn["user"]["audio"], turn["bot_audio"]
        assert user_ref["file"] == f"audio/turn-{n:04d}-user.flac"
        assert bot_ref["file"] == f"audio/turn-{n:04d}-bot.flac"
        assert user_ref["sample_rate"] == SR and bot_ref["sample_rate"] == BOT_SR
        assert user_ref["duration_s"] == pytest.approx(0.5) and bot_ref["duration_s"] == pytest.approx(0.4)
        assert hashlib.sha256((session / user_ref["file"]).read_bytes()).hexdigest() == user_ref["sha256"]
        user, rate = sf.read(session / user_ref["file"], dtype="int16")
        info = sf.info(session / user_ref["file"])
        assert (info.format, info.subtype, info.channels, rate) == ("FLAC", "PCM_16", 1, SR)
        np.testing.assert_array_equal(user, noise(0.5, n))  # int16 in, lossless out
        bot, rate = sf.read(session / bot_ref["file"], dtype="float32")
        assert rate == BOT_SR
        np.testing.assert_allclose(bot, sine(0.4, 200 + 50 * n), atol=1 / 16000)


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("field", ["text", "hash", "prev_hash", "seq"])
def test_one_edited_byte_names_the_record(session: Path, field: str) -> None:
    lines = lines_of(session)
    target = line_no(session, "turn", 2)
    line = lines[target - 1]
    needle = {"text": b"question number 2", "hash": b'"hash":"', "prev_hash": b'"prev_hash":"',
              "seq": b'"seq":' + str(target - 1).encode()}[field]
    pos = line.index(needle) + len(needle) - 1
    if field in ("hash", "prev_hash"):
        pos += 1  # first hex digit of the value
    edited = bytearray(line)
    edited[pos] = ord("9") if edited[pos] != ord("9") else ord("8")
    lines[target - 1] = bytes(edited)
    put_lines(session, lines)
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith(f"line {target} (seq ")
    if field != "seq":
        assert result.problems[0].startswith(f"line {target} (seq {target - 1}, turn)")
    assert "edited" in result.problems[0] or "reordered" in result.problems[0]


def test_edit_that_breaks_json_is_named(session: Path) -> None:
    lines = lines_of(session)
    lines[4] = lines[4][:-1] + b"!"  # destroy the closing brace of line 5
    put_lines(session, lines)
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith("line 5 (seq 4 expected): not valid JSON")


def test_whitespace_only_edit_is_caught(session: Path) -> None:
    lines = lines_of(session)
    lines[3] = lines[3].replace(b'"seq":', b'"seq": ', 1)  # same JSON value, different bytes
    put_lines(session, lines)
    result = verify(session)
    assert not result.ok
    assert result.problems[0] == "line 4 (seq 3, stt.final): not in canonical form: the line was edited"


def test_deleted_line_names_the_record_after_the_gap(session: Path) -> None:
    lines = lines_of(session)
    del lines[4]  # seq 4
    put_lines(session, lines)
    result = verify(session)
    assert not result.ok
    assert result.problems[0] == ("line 5 (seq 5, llm.sentence): expected seq 4: "
                                  "records were deleted, inserted or reordered")


def test_deleted_turn_record_is_caught_even_if_rechained(session: Path) -> None:
    # Someone recomputes the whole chain after deleting a turn: session.end still disagrees.
    rechain(session, lambda recs: recs.pop(line_no(session, "turn", 2) - 1))
    result = verify(session)
    assert not result.ok
    assert "session.end says 3 turns but the log has 2 turn records" in result.problems[0]


def test_swapped_lines_are_caught(session: Path) -> None:
    lines = lines_of(session)
    lines[3], lines[4] = lines[4], lines[3]  # seq 3 and 4
    put_lines(session, lines)
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith("line 4 (seq 4, moderation.verdict): expected seq 3")
    assert any(p.startswith("line 5 (seq 3, stt.final)") for p in result.problems)


def test_swapped_user_and_bot_audio_fail(session: Path) -> None:
    user, bot = session / "audio/turn-0002-user.flac", session / "audio/turn-0002-bot.flac"
    tmp = session / "audio/x"
    user.rename(tmp)
    bot.rename(user)
    tmp.rename(bot)
    result = verify(session)
    assert not result.ok
    target = line_no(session, "turn", 2)
    # refs are checked in the record's (sorted) key order: bot_audio before user.audio
    assert result.problems == [
        f"audio/turn-0002-{who}.flac: sha256 mismatch: the file was replaced or edited "
        f"(referenced by line {target} (seq {target - 1}, turn))" for who in ("bot", "user")]
    assert result.audio_files == 4


def test_deleted_audio_file_fails(session: Path) -> None:
    (session / "audio/turn-0003-bot.flac").unlink()
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith("audio/turn-0003-bot.flac: missing (referenced by line ")


def test_changed_audio_byte_fails(session: Path) -> None:
    path = session / "audio/turn-0001-user.flac"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith("audio/turn-0001-user.flac: sha256 mismatch")


def test_audio_ref_outside_session_dir_fails(session: Path) -> None:
    def point_outside(recs):
        recs[line_no(session, "turn", 1) - 1]["data"]["bot_audio"]["file"] = "../elsewhere.flac"

    rechain(session, point_outside)
    result = verify(session)
    assert not result.ok
    assert result.problems[0].startswith("../elsewhere.flac: audio path outside the session directory")


def test_newer_schema_major_is_rejected_clearly(session: Path) -> None:
    rechain(session, lambda recs: recs[0]["data"].update(schema_version="2.3"))
    result = verify(session)
    assert not result.ok
    assert result.problems == ["schema version 2.x is newer than this voicebot understands (1.x): "
                               "upgrade voicebot"]
    assert "chain      BROKEN: schema version 2.x is newer" in show(session)


def test_newer_schema_minor_is_accepted_with_warning(session: Path) -> None:
    rechain(session, lambda recs: recs[0]["data"].update(schema_version="1.9"))
    result = verify(session)
    assert result.ok, result.problems
    assert result.warnings == [f"schema version 1.9 is newer than {SCHEMA_VERSION}: fields added since may not be shown"]


def test_truncated_last_line_is_ok_with_warning(session: Path) -> None:
    lines = lines_of(session)
    last = lines.pop()  # session.end
    lines.append(last[: len(last) // 2])  # a partial write from kill -9
    put_lines(session, lines, trailing_newline=False)
    result = verify(session)
    assert result.ok, result.problems
    assert result.records == len(lines) - 1
    assert result.warnings == [f"last line incomplete (session was killed mid-write); "
                               f"{len(lines) - 1} records before it verified"]
    assert not result.ended
    assert read_session(session).truncated


def test_missing_session_end_is_a_warning(session: Path) -> None:
    put_lines(session, lines_of(session)[:-1])
    result = verify(session)
    assert result.ok
    assert result.warnings[0].startswith("no session.end record: the session did not end cleanly")


def test_not_a_session_dir(tmp_path: Path) -> None:
    result = verify(tmp_path)
    assert not result.ok and "events.jsonl: not found" in result.problems[0]
    with pytest.raises(VoicebotError, match="no audit log at"):
        read_session(tmp_path)


# --------------------------------------------------------------------------- privacy


def test_permissions_are_private_even_with_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        session = write_session(tmp_path / "audits", turns=1)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(session) == 0o700
    assert mode(session / "audio") == 0o700
    assert mode(session / "events.jsonl") == 0o600
    flacs = list((session / "audio").iterdir())
    assert len(flacs) == 2 and all(mode(f) == 0o600 for f in flacs)


def test_secrets_are_scrubbed(tmp_path: Path) -> None:
    header = {**HEADER, "llm": {"api_key": "sk-header-secret", "api_key_env": "OPENAI_API_KEY"}}
    w = AuditWriter.open(tmp_path, header)
    w.record("llm.request", {"turn": 1, "Authorization_Token": "tok-XYZ-123", "tokens": 42,
                             "nested": [{"db_password": "hunter2"}], "api_keys": ["sk-a", "sk-b"],
                             "secret_env": "MY_SECRET", "text": "my password is safe to mention"})
    w.close()
    raw = (w.dir / "events.jsonl").read_text()
    for secret in ("sk-header-secret", "tok-XYZ-123", "hunter2", "sk-a", "sk-b"):
        assert secret not in raw
    recs = records(w.dir)
    assert recs[0]["data"]["llm"] == {"api_key": "***", "api_key_env": "OPENAI_API_KEY"}
    data = recs[1]["data"]
    assert data["Authorization_Token"] == "***" and data["nested"] == [{"db_password": "***"}]
    assert data["api_keys"] == ["***", "***"]
    assert data["tokens"] == 42 and data["secret_env"] == "MY_SECRET"
    assert data["text"] == "my password is safe to mention"
    assert verify(w.dir).ok


def test_store_audio_false_writes_no_audio(tmp_path: Path) -> None:
    session = write_session(tmp_path, turns=2, store_audio=False)
    assert not (session / "audio").exists()
    assert list(session.rglob("*.flac")) == []
    turns = [r["data"] for r in records(session) if r["type"] == "turn"]
    assert [(t["user"]["audio"], t["bot_audio"]) for t in turns] == [(None, None), (None, None)]
    assert records(session)[0]["data"]["store_audio"] is False
    result = verify(session)
    assert result.ok and result.audio_files == 0 and result.turns == 2


# --------------------------------------------------------------------------- writer behaviour


def test_record_never_waits_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync stuck, record()/record_turn() still return and the event loop keeps running;
    once the disk is back, everything is written in call order."""
    w = AuditWriter.open(tmp_path, HEADER)
    real_fsync = os.fsync
    in_fsync, disk_back = threading.Event(), threading.Event()

    def stuck_fsync(fd: int) -> None:
        in_fsync.set()
        disk_back.wait()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", stuck_fsync)
    ticks: list[int] = []

    async def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0)

    async def bot() -> None:
        tick_task = asyncio.create_task(ticker())
        for n in range(1, 41):
            w.record("llm.sentence", {"turn": 1, "index": n, "text": f"sentence {n}"})
            await asyncio.sleep(0)
        w.record_turn(turn_data(1), user_audio=(noise(0.2, 1), SR), bot_audio=(sine(0.2), BOT_SR))
        assert in_fsync.wait(10), "the writer thread should be stuck in fsync by now"
        await tick_task
        # The disk is stuck: at most the record being fsynced reached the file.
        assert len(lines_of(w.dir)) <= 2
        assert ticks == [0, 1, 2, 3, 4]
        disk_back.set()
        assert await w.aflush()
        await w.aclose()

    asyncio.run(bot())
    recs = records(w.dir)
    assert [r["type"] for r in recs] == ["session.start"] + ["llm.sentence"] * 40 + ["turn", "session.end"]
    assert [r["data"]["index"] for r in recs[1:41]] == list(range(1, 41))
    assert verify(w.dir).ok


def test_record_snapshots_data_and_normalizes_values(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    data = {"turn": 1, "text": "before", "scores": {1: np.float32(0.5)}, "nan": float("nan"),
            "pair": (1, 2), "arr": np.arange(3), "path": Path("/x/y")}
    w.record("custom.thing", data)
    data["text"] = "after"
    w.close()
    rec = records(w.dir)[1]
    assert rec["data"] == {"turn": 1, "text": "before", "scores": {"1": 0.5}, "nan": None,
                           "pair": [1, 2], "arr": [0, 1, 2], "path": "/x/y"}
    assert verify(w.dir).ok


def test_close_is_idempotent_and_later_records_are_dropped(tmp_path: Path, caplog) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record("error", {"turn": 1, "stage": "tts", "message": "voice not found"})
    w.close(reason="user quit")
    w.close(reason="again")
    with caplog.at_level(logging.WARNING):
        w.record("llm.sentence", {"turn": 1, "index": 0, "text": "too late"})
        w.record("llm.sentence", {"turn": 1, "index": 1, "text": "too late"})
    assert w.closed and w.flush()
    recs = records(w.dir)
    assert [r["type"] for r in recs] == ["session.start", "error", "session.end"]
    assert recs[-1]["data"] == {"reason": "user quit", "turns": 0, "errors": 1}
    assert len([r for r in caplog.records if "is closed" in r.getMessage()]) == 1


def test_context_manager_records_the_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with AuditWriter.open(tmp_path, HEADER) as w:
            raise RuntimeError("boom")
    assert records(w.dir)[-1]["data"]["reason"] == "error: RuntimeError"


def test_disk_failure_is_logged_once_and_never_raises(tmp_path: Path, monkeypatch, caplog) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record("stt.final", {"turn": 1, "text": "fine"})
    assert w.flush()

    def disk_full(fd: int, blob: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_mod, "_write_all", disk_full)
    with caplog.at_level(logging.ERROR, logger="bot.audit.writer"):
        for n in range(5):
            w.record("stt.final", {"turn": 2 + n, "text": "lost"})
        assert w.flush()
        w.close()
    assert w.failed and "No space left on device" in (w.error or "")
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    result = verify(w.dir)  # what was written before the failure still verifies
    assert result.ok and result.records == 2
    assert "no session.end record" in result.warnings[0]


def test_bad_audio_clip_keeps_the_record(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record_turn(turn_data(1), user_audio=(np.zeros((10, 3, 2), np.float32), SR), bot_audio=(sine(0.1), BOT_SR))
    w.close()
    turn = records(w.dir)[1]["data"]
    assert turn["user"]["audio"] is None and turn["bot_audio"]["file"] == "audio/turn-0001-bot.flac"
    assert turn["errors"] and "turn-0001-user" in turn["errors"][0]
    assert verify(w.dir).ok


def test_generic_audio_clips_and_bot_initiated_turn(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record("greeting", {"text": "Ahoy!", "clip": None}, audio={"clip": AudioClip("greeting", sine(0.3), BOT_SR)})
    w.record("greeting", {"text": "Ahoy again!"}, audio={"clip": AudioClip("greeting", sine(0.2), BOT_SR)})
    w.record_turn(turn_data(0, user=None, generated=["Welcome aboard."]), bot_audio=(sine(0.2), BOT_SR))
    w.close()
    recs = records(w.dir)
    assert recs[1]["data"]["clip"]["file"] == "audio/greeting.flac"
    assert recs[2]["data"]["clip"]["file"] == "audio/greeting-2.flac"  # names never collide
    assert recs[3]["data"]["user"] is None and recs[3]["data"]["bot_audio"]["file"] == "audio/turn-0000-bot.flac"
    result = verify(w.dir)
    assert result.ok and result.audio_files == 3
    assert "bot-initiated" in show(w.dir)


def test_open_fails_with_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(VoicebotError, match="cannot create the audit log in .*: set audit.dir"):
        AuditWriter.open(blocker / "audits", HEADER)


# --------------------------------------------------------------------------- kill -9


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from bot.audit import AuditWriter

    base, mode = sys.argv[1], sys.argv[2]
    w = AuditWriter.open(base, {"mode": "test"})
    print("DIR", w.dir, flush=True)
    n = 0
    while True:
        n += 1
        w.record("stt.final", {"turn": n, "text": "words " * 50})
        w.record_turn({"turn": n, "speaker": "user", "user": {"transcript": "words"}, "generated": ["ok"],
                       "spoken": "ok"},
                      user_audio=(np.full(8000, n, np.int16), 16000),
                      bot_audio=(np.full(8000, -n, np.int16), 16000))
        if mode == "self" and n == 4:
            for i in range(50):  # queued but not flushed when the process dies
                w.record("llm.sentence", {"turn": 5, "index": i, "text": "x" * 500})
            os.kill(os.getpid(), signal.SIGKILL)
        w.flush()
        print("FLUSHED", 1 + 2 * n, flush=True)  # records on disk (session.start + 2 per turn)
""")


@pytest.mark.parametrize("who", ["parent", "self"])
def test_kill_9_leaves_every_flushed_record_verifiable(tmp_path: Path, who: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), who], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    session, flushed = None, 0
    try:
        for line in proc.stdout:
            key, value = line.split(" ", 1)
            if key == "DIR":
                session = Path(value.strip())
            else:
                flushed = int(value)
                if who == "parent" and flushed >= 1 + 2 * 6:
                    proc.send_signal(signal.SIGKILL)  # the child keeps writing: this lands mid-stream
                    break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert session is not None and flushed >= 7
    result = verify(session)
    assert result.ok, result.problems
    assert result.records >= flushed
    assert not result.ended
    assert any("session.end" in w or "last line incomplete" in w for w in result.warnings)
    assert result.audio_files >= 2 * (flushed - 1) // 2
    assert "NOT ENDED" in show(session)


# --------------------------------------------------------------------------- show / read


def test_show_renders_a_reviewable_transcript(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    staged(w, 1)
    w.record_turn(turn_data(1), user_audio=(noise(0.3, 1), SR), bot_audio=(sine(0.3), BOT_SR))
    # turn 2: input blocked, refusal spoken
    w.record("moderation.verdict", {"turn": 2, "stage": "input", "text": "something nasty",
                                    "verdict": verdict(False)})
    w.record_turn(turn_data(2, user={"transcript": "something nasty", "audio": None, "start_s": 5.0, "end_s": 6.0},
                            input_verdict=verdict(False), generated=[], output_verdicts=[],
                            spoken="Arr, I won't talk about that.", refused=True))
    # turn 3: second sentence blocked on output, then the user barged in
    gen = ["Here is a fine answer.", "Here is a rude remark."]
    w.record_turn(turn_data(3, generated=gen, output_verdicts=[verdict(True, gen[0]), verdict(False, gen[1])],
                            spoken="Here is a fine", interrupted=True,
                            errors=["tts: voice glitch"]))
    w.record("error", {"stage": "transport", "message": "audio device vanished"})
    w.record("custom.metric", {"turn": 3, "gpu_temp": 71})
    w.record("vendor.note", {"note": "outside any turn"})
    # turn 4: in flight when the session stopped (no summary)
    w.record("stt.final", {"turn": 4, "text": "and one more thing"})
    w.record("llm.sentence", {"turn": 4, "index": 0, "text": "Sure, the"})
    w.flush()
    text = show(w.dir)
    w.close()

    assert f"voicebot audit session {w.dir.name}" in text
    assert "persona    pirate (sha256 abababababab)" in text
    assert "mode pipeline" in text and "llm: SmolLM2-135M-Instruct" in text
    assert "chain      OK: " in text
    assert "NOT ENDED" in text  # shown before close
    assert 'heard      "question number 1"' in text
    assert "output     allowed (2 checks, backend=blocklist)" in text
    assert "timings    stt 120 ms · llm_ttft 300 ms · tts_ttfa 80 ms · v2v 650 ms" in text
    assert "audio      user audio/turn-0001-user.flac (0.30 s) · bot audio/turn-0001-bot.flac (0.30 s)" in text
    t2 = text.split("Turn 2")[1].split("Turn 3")[0]
    assert '"something nasty"   [BLOCKED by input moderation]' in t2
    assert "input      BLOCKED (action=refuse, categories=harassment" in t2
    assert 'spoken     "Arr, I won\'t talk about that."' in t2 and "refused    yes" in t2
    t3 = text.split("Turn 3")[1].split("Turn 4")[0]
    assert '2. "Here is a rude remark."   [BLOCKED]' in t3
    assert '1. "Here is a fine answer."\n' in t3
    assert "output     1. allowed (backend=blocklist, 1.5 ms)" in t3
    assert '2. BLOCKED (action=refuse' in t3 and 'on "Here is a rude remark."' in t3
    assert 'spoken     "Here is a fine"   [cut at barge-in]' in t3
    assert "tts: voice glitch" in t3 and 'custom.metric  {"gpu_temp": 71, "turn": 3}' in t3
    t4 = text.split("Turn 4")[1]
    assert "INCOMPLETE" in t4 and '"and one more thing"' in t4 and '1. "Sure, the"' in t4
    assert "vendor.note" in text and "audio device vanished" in text

    closed = show(w.dir)
    assert "ended      ended · 3 turns · 1 errors" in closed
    assert "chain      OK: 18 records, 3 turns, 2 audio files verified; head " in closed


def test_show_reports_a_broken_chain(session: Path) -> None:
    (session / "audio/turn-0001-bot.flac").unlink()
    assert "chain      BROKEN: audio/turn-0001-bot.flac: missing" in show(session)


def test_read_session_groups_records_by_turn(session: Path) -> None:
    s = read_session(session)
    assert s.header["persona"]["name"] == "pirate" and s.schema_version == SCHEMA_VERSION
    assert [t.number for t in s.turns] == [1, 2, 3]
    assert all(t.complete and len(t.events) == STAGED_PER_TURN for t in s.turns)
    assert s.turns[0].events_of("stt.final")[0]["data"]["text"] == "question number 1"
    assert s.end == {"reason": "ended", "turns": 3, "errors": 0}
    assert s.audio_path(s.turns[0].summary["bot_audio"]) == session / "audio/turn-0001-bot.flac"
    assert s.other == [] and s.bad_lines == [] and not s.truncated


def test_unknown_record_types_verify_and_are_kept(tmp_path: Path) -> None:
    w = AuditWriter.open(tmp_path, HEADER)
    w.record("future.kind", {"nested": {"deep": [1, 2, 3]}})
    w.close()
    assert verify(w.dir).ok
    assert read_session(w.dir).other[0]["type"] == "future.kind"
    assert 'future.kind  {"nested": {"deep": [1, 2, 3]}}' in show(w.dir)


def test_writer_left_open_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    code = ("from bot.audit import AuditWriter\n"
            "w = AuditWriter.open(__import__('sys').argv[1], {'mode': 'test'})\n"
            "for i in range(200):\n"
            "    w.record('stt.final', {'turn': i, 'text': 'hi'})\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    (session,) = list(tmp_path.iterdir())
    result = verify(session)
    assert result.ok and result.ended and result.records == 202
    assert records(session)[-1]["data"]["reason"] == "exit"
