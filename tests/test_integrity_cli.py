"""Issue 17 probes 1, 2, 5 and 6 as a user meets them on the command line: planted secrets never leave the
process, outputs are checked before any work, a turn that cannot be answered says the fallback line, bad
audio and an unreachable Discord are one line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent

PW_CONFIG = "PwPlanted1"      # a password inside llm.base_url
PW_SPOKEN = "PwPlanted2"      # a password in a URL the bot says
TOKEN = "TokPlanted3"         # a token in a query string the bot says
ENV_SECRET = "env-planted-secret-4711"  # the value of the variable llm.api_key_env names
SECRETS = (PW_CONFIG, PW_SPOKEN, TOKEN, ENV_SECRET)


def cli(*args, env=None, timeout=300):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    full_env.update(env or {})
    # `python -m bot.cli` from the checkout: the code under test, whichever checkout the venv was installed from
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_planted_secrets_never_leave_and_a_too_long_turn_says_the_fallback(make_speech, tmp_path: Path) -> None:
    """One session: turn 1 is answered with a reply full of secrets; turn 2 is too long for the window
    left by the persona (llm.n_ctx = 256), so it fails: the fallback line is spoken, the turn is marked
    failed on the console and in the audit log."""
    persona = tmp_path / "tight.yaml"
    persona.write_text(
        "name: Tight\n"
        "system_prompt: You are Tight, a terse assistant who answers questions about the weather, the time "
        "and simple facts, in as few words as possible, never more than one short sentence.\n"
        "style: Be brief.\n"
        "fallback: Sorry, that was too long for me.\n")
    q = make_speech([(0.3, "Hello there."),
                     (12.0, "Could you please tell me everything you know about the long and complicated history "
                           "of the Roman empire, its many emperors, its great armies, its famous roads and "
                           "its beautiful cities?")])
    reply_text = (f"Go to http://admin:{PW_SPOKEN}@example.com/?token={TOKEN} now, the key is {ENV_SECRET}.")
    audits = tmp_path / "audits"
    common = ["--set", f"audit.dir={audits}", "--set", "llm.provider=scripted",
              "--set", f"llm.base_url=http://user:{PW_CONFIG}@127.0.0.1:9/v1",
              "--set", "llm.api_key_env=PLANTED_KEY", "--set", "llm.n_ctx=256", "-p", str(persona)]
    env = {"PLANTED_KEY": ENV_SECRET}
    run = cli("run", "-i", str(q), "-o", str(tmp_path / "reply.wav"), *common,
              "--set", "llm.script=" + json.dumps([reply_text, "This should never be said."]), env=env)
    assert run.returncode == 0, run.stderr
    assert "[turn 1] bot:" in run.stdout and "example.com" in run.stdout
    assert "[turn 2] FAILED:" in run.stderr and "does not fit" in run.stderr
    assert "[turn 2] bot:  Sorry, that was too long for me. [failed]" in run.stdout
    session = next(audits.iterdir())

    records = [json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()]
    failed = [r["data"]["turn"] for r in records if r["type"] == "turn.failed"]
    turns = {r["data"]["turn"]: r["data"] for r in records if r["type"] == "turn"}
    assert failed and min(failed) == 2  # (the long question may be heard as two turns: both too long)
    assert all(turns[n]["failed"] is True and turns[n]["spoken"] == "Sorry, that was too long for me." for n in failed)
    assert turns[1]["failed"] is False and f"admin:***@example.com" in turns[1]["generated"][0]

    shown = cli("audit", "show", str(session))
    report = tmp_path / "report.html"
    reported = cli("audit", "report", str(session), "-o", str(report))
    config = cli("config", "show", *[a for a in common if a != "-p" and a != str(persona)], env=env)
    verified = cli("audit", "verify", str(session))
    assert shown.returncode == reported.returncode == config.returncode == verified.returncode == 0
    assert "user:***@127.0.0.1:9" in config.stdout
    outputs = {"run stdout": run.stdout, "run stderr": run.stderr, "events.jsonl": (session / "events.jsonl").read_text(),
               "audit show": shown.stdout + shown.stderr, "report": report.read_text(),
               "config show": config.stdout + config.stderr, "verify": verified.stdout + verified.stderr}
    for where, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into {where}"


def test_secret_in_an_error_line_is_masked(tmp_path: Path) -> None:
    result = cli("run", "-i", "q.wav", "--set", "llm.provider=openai", "--set", "llm.model=m",
                 "--set", f"llm.base_url=http://user:{PW_CONFIG}@127.0.0.1:9/v1?api_key={TOKEN}",
                 "--set", f"audit.dir={tmp_path}")
    one_line_error(result, "unreachable", "user:***@127.0.0.1:9")
    assert PW_CONFIG not in result.stderr and TOKEN not in result.stderr


def test_outputs_are_checked_before_any_work(make_speech, tmp_path: Path, monkeypatch) -> None:
    import asyncio

    import pytest

    from bot.config import load_settings
    from bot.errors import VoicebotError
    from bot.persona import load_persona
    from bot.session import run_file

    q = make_speech([(0.2, "Hi.")])
    before = q.read_bytes()
    audits = tmp_path / "audits"
    base = ["--set", f"audit.dir={audits}", "--set", "llm.provider=scripted", "--set", 'llm.script=["Hi."]']
    one_line_error(cli("run", "-i", str(q), "-o", str(q), *base), "is the input file")  # as the user sees it
    assert q.read_bytes() == before

    def run(output, **over):
        settings = load_settings(None, {"audit.dir": str(audits), "llm.provider": "scripted", "llm.script": ["Hi."],
                                        **over})
        with pytest.raises(VoicebotError) as err:
            asyncio.run(run_file(settings, load_persona("default"), q, output))
        return str(err.value)

    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    assert ".wav or .flac" in run(tmp_path / "reply.txt")
    assert "is a file, not a folder" in run(q / "reply.wav")
    assert "cannot write the reply" in run("/sys/voicebot-reply.wav")
    assert "audit.dir" in run(tmp_path / "r.wav", **{"audit.dir": "/sys/voicebot"})
    assert "$NO_SUCH_KEY, which is not set" in run(tmp_path / "r.wav", **{"audit.key_env": "NO_SUCH_KEY"})
    assert not audits.exists() or not any(audits.iterdir())  # no session was started
    assert not (tmp_path / "r.wav").exists()
    session = tmp_path / "s"
    session.mkdir()
    (session / "events.jsonl").write_text("")
    one_line_error(cli("audit", "report", str(session), "-o", "/sys/report.html"), "cannot write the report")


def test_truncated_and_nan_audio(make_speech, tmp_path: Path) -> None:
    q = make_speech([(0.3, "What colour is the sky?")], total_secs=4.0)
    blob = q.read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(blob[: len(blob) // 2])
    run = cli("run", "-i", str(truncated), "-o", str(tmp_path / "r.wav"), "--set", f"audit.dir={tmp_path / 'a'}",
              "--set", "llm.provider=scripted", "--set", 'llm.script=["Blue."]')
    assert "Traceback" not in run.stderr
    assert "is truncated or damaged" in run.stderr and "of 4.00 s" in run.stderr, run.stderr

    audio, rate = sf.read(str(q), dtype="float32")
    audio[1000:1100] = np.nan
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), audio, rate, subtype="FLOAT")
    one_line_error(cli("run", "-i", str(nan), "-o", str(tmp_path / "r2.wav")), "not numbers (NaN or infinite)")


def test_discord_without_network_is_one_line(tmp_path: Path) -> None:
    result = cli("discord", "--set", f"audit.dir={tmp_path}", "--set", "llm.provider=scripted",
                 "--set", 'llm.script=["Hi."]',
                 env={"DISCORD_TOKEN": "not.a-real.token"}, timeout=180)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [x for x in result.stderr.strip().splitlines() if x.startswith("error: ")]
    assert len(result.stderr.strip().splitlines()) == 1 and lines, result.stderr
    # no network here: cannot reach it; with a network, the made-up token is rejected: one line either way
    assert "cannot reach Discord" in lines[0] or "rejected the token" in lines[0]
