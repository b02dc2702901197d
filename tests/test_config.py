"""Config: defaults < TOML < env < flags, clear one-line errors, secrets masked."""

import pytest

from bot.config import load_settings
from bot.errors import VoicebotError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("VOICEBOT_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_cascade():
    s = load_settings()
    assert s.mode == "pipeline"
    assert s.llm.provider == "embedded"
    assert s.stt.model == "" and s.tts.voice == ""
    assert s.persona == "default"


def test_toml_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "bot.toml"
    cfg.write_text('persona = "pirate"\n[llm]\nprovider = "openai"\nmodel = "from-toml"\n'
                   'base_url = "http://localhost:11434/v1"\ntemperature = 0.2\n')
    s = load_settings(cfg)
    assert (s.persona, s.llm.provider, s.llm.model, s.llm.temperature) == ("pirate", "openai", "from-toml", 0.2)

    monkeypatch.setenv("VOICEBOT_LLM__MODEL", "from-env")
    s = load_settings(cfg)
    assert s.llm.model == "from-env" and s.llm.temperature == 0.2  # env wins, the rest of the file stays

    s = load_settings(cfg, {"llm.model": "from-flag"})
    assert s.llm.model == "from-flag"


def test_config_file_from_env_var(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[vad]\nstop_secs = 0.4\n')
    monkeypatch.setenv("VOICEBOT_CONFIG", str(cfg))
    assert load_settings().vad.stop_secs == 0.4


def test_bad_value_names_key_and_allowed_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('mode = "telepathy"\n')
    with pytest.raises(VoicebotError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert "'mode'" in msg and "'pipeline'" in msg and "telepathy" in msg and "\n" not in msg


def test_bad_nested_value(tmp_path):
    with pytest.raises(VoicebotError, match=r"'llm.provider'.*'embedded'.*'openai'.*'scripted'"):
        load_settings(None, {"llm.provider": "skynet"})
    with pytest.raises(VoicebotError, match=r"'vad.stop_secs'"):
        load_settings(None, {"vad.stop_secs": -1})


def test_unknown_key_is_rejected(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[llm]\nmodle = "typo"\n')
    with pytest.raises(VoicebotError, match=r"'llm.modle' is not a voicebot setting"):
        load_settings(cfg)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(VoicebotError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[llm\nprovider = ")
    with pytest.raises(VoicebotError, match="could not be read"):
        load_settings(broken)


def test_secrets_are_masked_and_key_names_kept(monkeypatch):
    s = load_settings(None, {"llm.api_key_env": "MY_KEY"})
    public = s.public_dict()
    assert public["llm"]["api_key_env"] == "MY_KEY"  # the variable's name is not a secret
    from bot.redact import redact

    assert redact({"api_key": "sk-123", "token": "abc", "tokens": 5}) == {"api_key": "***", "token": "***",
                                                                        "tokens": 5}


def test_config_hash_changes_with_config():
    a = load_settings().config_hash()
    assert a == load_settings().config_hash()
    assert a != load_settings(None, {"llm.temperature": 0.1}).config_hash()


def test_env_typos_are_rejected(monkeypatch):
    monkeypatch.setenv("VOICEBOT_AUDIT_DIR", "/tmp/x")  # one underscore: not a nested key
    with pytest.raises(VoicebotError, match="VOICEBOT_AUDIT_DIR is not a voicebot setting"):
        load_settings()
    monkeypatch.delenv("VOICEBOT_AUDIT_DIR")
    monkeypatch.setenv("VOICEBOT_AUDIT__DIRR", "/tmp/x")
    with pytest.raises(VoicebotError, match="'audit.dirr' is not a voicebot setting"):
        load_settings()
