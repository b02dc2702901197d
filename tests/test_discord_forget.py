"""``/forget``: a speaker's audio is deleted from the audit dir, the deletion is logged, and verify still passes
(while a file deleted any other way, or a forget record that does not match, still fails)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bot.audit import AuditWriter, show, verify
from bot.audit.chain import canonical, seal
from bot.discord.forget import FORGET_TYPE, forget_speaker

SR = 16000


def turn(n: int, speaker: str) -> dict:
    return {"turn": n, "speaker": speaker, "user": {"transcript": f"{speaker} says {n}", "audio": None},
            "generated": [], "spoken": "", "bot_audio": None}


def open_session(tmp_path: Path) -> AuditWriter:
    writer = AuditWriter.open(tmp_path / "audits", {"mode": "pipeline"})
    rng = np.random.default_rng(0)
    for n, who in enumerate(["Alice", "Bob", "Alice", "Alice"], start=1):
        writer.record_turn(turn(n, who), user_audio=(rng.uniform(-0.3, 0.3, SR // 2), SR),
                           bot_audio=(np.zeros(SR // 4), SR) if n != 4 else None)
    writer.flush()
    return writer


def user_files(directory: Path) -> set[str]:
    return {p.name for p in (directory / "audio").glob("*-user.flac")}


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]


def test_forget_deletes_only_the_callers_audio_and_logs_it(tmp_path):
    writer = open_session(tmp_path)
    directory = writer.dir
    before = {r["data"]["turn"]: r["data"]["user"]["audio"] for r in records(directory) if r["type"] == "turn"}
    result = forget_speaker(writer, "Alice", user_id=111, requested_by="Alice")
    assert result.turns == 3 and len(result.deleted) == 3 and result.missing == []
    assert user_files(directory) == {"turn-0002-user.flac"}, "Bob's audio is kept"
    assert len(list((directory / "audio").glob("*-bot.flac"))) == 3, "the bot's replies are kept"
    forget = [r for r in records(directory) if r["type"] == FORGET_TYPE]
    assert len(forget) == 1
    data = forget[0]["data"]
    assert data["speaker"] == "Alice" and data["user_id"] == 111 and data["requested_by"] == "Alice"
    assert data["deleted"] == [{"path": before[n]["file"], "sha256": before[n]["sha256"], "turn": n}
                               for n in (1, 3, 4)]
    assert "Alice" in result.message() and "3 audio files" in result.message()

    # the log still verifies (while the session is still running, and after it ended)
    result_live = verify(directory)
    assert result_live.ok, result_live.problems
    writer.close()
    checked = verify(directory)
    assert checked.ok, checked.problems
    assert checked.forgotten_audio == 3 and checked.audio_files == 4  # Bob's user file + 3 bot files
    assert any("deleted on request" in w for w in checked.warnings)
    assert "Alice says 1" in show(directory), "transcripts stay"


def test_forget_twice_and_unknown_speaker(tmp_path):
    writer = open_session(tmp_path)
    forget_speaker(writer, "Alice")
    again = forget_speaker(writer, "Alice")
    assert again.turns == 3 and again.deleted == []
    nobody = forget_speaker(writer, "Carol")
    assert nobody.turns == 0 and "Nothing to forget" in nobody.message()
    writer.close()
    assert verify(writer.dir).ok
    assert sum(r["type"] == FORGET_TYPE for r in records(writer.dir)) == 2  # Carol's no-op is not logged


def test_a_file_deleted_without_a_forget_record_still_breaks_verify(tmp_path):
    writer = open_session(tmp_path)
    forget_speaker(writer, "Alice")
    writer.close()
    (writer.dir / "audio" / "turn-0002-user.flac").unlink()  # Bob's: nobody asked
    checked = verify(writer.dir)
    assert not checked.ok
    assert any("turn-0002-user.flac: missing" in p for p in checked.problems)


def _append_forged(directory: Path, deleted: list[dict]) -> None:
    """Append a correctly chained privacy.forget record (as someone with write access could)."""
    lines = (directory / "events.jsonl").read_bytes().splitlines()
    last = json.loads(lines[-1])
    rec = seal(last["seq"] + 1, last["time"], last["t"], FORGET_TYPE, {"speaker": "x", "deleted": deleted},
               last["hash"])
    (directory / "events.jsonl").write_bytes(b"\n".join(lines + [canonical(rec)]) + b"\n")


def test_a_forget_record_must_match_the_hash_and_come_after(tmp_path):
    writer = open_session(tmp_path)
    writer.close()
    directory = writer.dir
    refs = {r["data"]["turn"]: r["data"]["user"]["audio"] for r in records(directory) if r["type"] == "turn"}
    # wrong hash: the deleted file is not the one the log referenced
    (directory / refs[2]["file"]).unlink()
    _append_forged(directory, [{"path": refs[2]["file"], "sha256": "0" * 64}])
    checked = verify(directory)
    assert not checked.ok and any("missing" in p for p in checked.problems)
    # (a record after session.end is itself a problem too)
    assert any("after session.end" in p for p in checked.problems)


def test_a_forget_record_before_the_reference_does_not_excuse_it(tmp_path):
    """Only a *later* privacy.forget record excuses a missing file: the same record moved before the turn
    (the chain re-sealed, so only the order differs) does not."""
    writer = open_session(tmp_path)
    forget_speaker(writer, "Bob")
    writer.close()
    assert verify(writer.dir).ok
    recs = records(writer.dir)
    forget = next(r for r in recs if r["type"] == FORGET_TYPE)
    rest = [r for r in recs if r is not forget]
    bob_turn = next(i for i, r in enumerate(rest) if r["type"] == "turn" and r["data"]["speaker"] == "Bob")
    reordered = rest[:bob_turn] + [forget] + rest[bob_turn:]
    prev, lines = "0" * 64, []
    for seq, r in enumerate(reordered):
        sealed = seal(seq, r["time"], r["t"], r["type"], r["data"], prev)
        lines.append(canonical(sealed))
        prev = sealed["hash"]
    (writer.dir / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    checked = verify(writer.dir)
    assert not checked.ok and checked.forgotten_audio == 0
    assert any("turn-0002-user.flac: missing" in p for p in checked.problems)
