"""Issue 17, probe 4: truncated or forged audit logs. A kept head hash and a signing key detect what the
hash chain alone cannot (a re-sealed chain, cut-off last records, a forged privacy.forget)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.audit import AuditWriter, verify
from bot.audit.chain import canonical, seal
from bot.audit.signing import SIG_FILE, load_key, new_ed25519_key, signer_from_env
from bot.cli import app
from bot.errors import VoicebotError

HMAC_KEY = "test-hmac-key-0123456789abcdef"
HEADER = {"mode": "pipeline", "persona": {"name": "Nova"}}


def write(base: Path, signer=None, turns: int = 3) -> Path:
    w = AuditWriter.open(base, HEADER, signer=signer)
    rng = np.random.default_rng(1)
    for n in range(1, turns + 1):
        w.record("stt.final", {"turn": n, "text": f"question {n}"})
        w.record_turn({"turn": n, "speaker": "user", "user": {"transcript": f"question {n}"},
                       "spoken": f"answer {n}", "errors": []},
                      user_audio=(rng.integers(-2000, 2000, 8000, dtype=np.int16), 16000),
                      bot_audio=(rng.integers(-2000, 2000, 8000, dtype=np.int16), 22050))
    w.close()
    return w.dir


def recs(session: Path) -> list[dict]:
    return [json.loads(x) for x in (session / "events.jsonl").read_bytes().splitlines() if x]


def put(session: Path, records: list[dict]) -> None:
    (session / "events.jsonl").write_bytes(b"".join(canonical(r) + b"\n" for r in records))


def reseal(records: list[dict]) -> list[dict]:
    """What a forger with write access does: recompute every hash from the first record on."""
    out, prev = [], "0" * 64
    for seq, r in enumerate(records):
        sealed = seal(seq, r["time"], r["t"], r["type"], r["data"], prev)
        prev = sealed["hash"]
        out.append(sealed)
    return out


def forge_forget(session: Path) -> None:
    """Delete the bot's audio of turn 2 and cover it with a forged privacy.forget + re-sealed session.end."""
    records = recs(session)
    end = records.pop()
    turn2 = next(r for r in records if r["type"] == "turn" and r["data"]["turn"] == 2)
    ref = turn2["data"]["bot_audio"]
    (session / ref["file"]).unlink()
    records.append({**end, "type": "privacy.forget",
                    "data": {"speaker": "user", "deleted": [{"path": ref["file"], "sha256": ref["sha256"]}]}})
    records.append(end)
    put(session, reseal(records))


def test_truncated_log_passes_without_a_head_and_fails_with_it(tmp_path: Path) -> None:
    session = write(tmp_path)
    kept = verify(session).head
    records = recs(session)
    put(session, records[:-3])  # the last turn and session.end cut off: looks like a killed session
    plain = verify(session)
    assert plain.ok and "no session.end" in plain.warnings[0]  # what the chain alone can say
    anchored = verify(session, head=kept)
    assert not anchored.ok
    assert "is not in this log" in anchored.problems[0] and "cut off" in anchored.problems[0]
    assert verify(session, head=plain.head).ok and verify(session, head=plain.head).head_checked


def test_head_that_the_log_goes_past_is_reported(tmp_path: Path) -> None:
    session = write(tmp_path)
    early = recs(session)[2]["hash"]
    result = verify(session, head=early[:16])
    assert not result.ok and "goes on after the kept head" in result.problems[0]
    assert not verify(session, head="zz-not-a-hash").ok


def test_cli_prints_head_and_accepts_head(tmp_path: Path) -> None:
    session = write(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "verify", str(session)])
    assert out.exit_code == 0, out.output
    head = next(line.split()[1] for line in out.output.splitlines() if line.startswith("head: "))
    assert head == verify(session).head and len(head) == 64
    assert runner.invoke(app, ["audit", "verify", str(session), "--head", head]).exit_code == 0
    put(session, recs(session)[:-1])
    cut = runner.invoke(app, ["audit", "verify", str(session), "--head", head])
    assert cut.exit_code == 1 and "not in this log" in cut.output


def test_resealed_forgery_passes_the_chain_but_not_the_signature(tmp_path: Path) -> None:
    signer = load_key(HMAC_KEY, "test")
    session = write(tmp_path, signer)
    assert recs(session)[0]["data"]["signing"] == {"alg": "hmac-sha256", "id": signer.key_id}
    assert HMAC_KEY not in (session / "events.jsonl").read_text() + (session / SIG_FILE).read_text()
    good = verify(session, key=signer)
    assert good.ok and good.signed == good.records == len(recs(session))

    records = recs(session)
    turn1 = next(r for r in records if r["type"] == "turn")
    turn1["data"]["spoken"] = "something the bot never said"
    put(session, reseal(records))
    forged = verify(session, key=signer)
    assert not forged.ok
    assert "turn" in forged.problems[0] and "without the signing key" in forged.problems[0]
    # Even a verifier without the key sees a record with no signature line for it.
    assert not verify(session).ok


def test_forged_privacy_forget_is_caught(tmp_path: Path) -> None:
    unsigned = write(tmp_path / "unsigned")
    kept = verify(unsigned).head
    forge_forget(unsigned)
    assert verify(unsigned).ok  # the chain alone is fooled (it always was: that is the probe)
    assert not verify(unsigned, head=kept).ok  # a head kept elsewhere is not

    signer = load_key(HMAC_KEY, "test")
    signed = write(tmp_path / "signed", signer)
    forge_forget(signed)
    result = verify(signed, key=signer)
    assert not result.ok and "privacy.forget" in result.problems[0]


def test_ed25519_verifies_with_the_public_key_only(tmp_path: Path, monkeypatch) -> None:
    private, public = new_ed25519_key()
    monkeypatch.setenv("AUDIT_TEST_KEY", private)
    signer = signer_from_env("AUDIT_TEST_KEY")
    session = write(tmp_path, signer, turns=1)
    pub = load_key(public, "--public-key")
    assert not pub.can_sign
    result = verify(session, key=pub)
    assert result.ok and result.signed == result.records
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "verify", str(session), "--public-key", public])
    assert out.exit_code == 0 and f"{result.records} of {result.records} signatures valid" in out.output
    wrong = verify(session, key=load_key(new_ed25519_key()[1], "other"))
    assert not wrong.ok and "not with the key given" in wrong.problems[0]
    assert not verify(session, key=load_key(HMAC_KEY, "hmac")).ok


def test_key_env_fails_closed_and_short_keys_are_refused(monkeypatch) -> None:
    monkeypatch.delenv("AUDIT_TEST_KEY", raising=False)
    assert signer_from_env("") is None
    with pytest.raises(VoicebotError, match=r"\$AUDIT_TEST_KEY, which is not set"):
        signer_from_env("AUDIT_TEST_KEY")
    with pytest.raises(VoicebotError, match="shorter than 16"):
        load_key("short", "$X")
    assert "secret" not in repr(load_key("secret-" * 4, "x"))


def test_an_unsigned_log_fails_when_a_key_is_expected(tmp_path: Path) -> None:
    session = write(tmp_path, turns=1)
    result = verify(session, key=load_key(HMAC_KEY, "test"))
    assert not result.ok and "not signed" in result.problems[0]


def test_world_readable_log_is_warned(tmp_path: Path) -> None:
    session = write(tmp_path, turns=1)
    assert not [w for w in verify(session).warnings if "other users" in w]
    os.chmod(session / "events.jsonl", 0o644)
    warnings = [w for w in verify(session).warnings if "other users" in w]
    assert warnings and warnings[0].startswith("events.jsonl: readable by other users (mode 644)")
