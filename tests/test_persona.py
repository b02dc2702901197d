"""Personas: shipped files load, bad files fail with the field named."""

import pytest

from bot.errors import VoicebotError
from bot.persona import list_personas, load_persona


def test_shipped_personas_load():
    names = list_personas()
    assert "default" in names and "pirate" in names
    for name in names:
        p = load_persona(name)
        assert p.name and p.system_prompt and p.refusal
        assert p.style.strip() in p.instructions and p.system_prompt.strip() in p.instructions
        assert len(p.sha256) == 64 and p.source.endswith(f"{name}.yaml")


def test_unknown_persona_lists_choices():
    with pytest.raises(VoicebotError, match=r"unknown persona 'nobody'.*default"):
        load_persona("nobody")


def test_persona_from_path_and_field_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("name: Ada\nsystem_prompt: You are Ada.\nblocklist: [spoilers]\n")
    p = load_persona(str(good))
    assert p.name == "Ada" and p.blocklist == ["spoilers"]

    missing = tmp_path / "missing.yaml"
    missing.write_text("name: Ada\n")
    with pytest.raises(VoicebotError, match=r"field 'system_prompt'"):
        load_persona(str(missing))

    typo = tmp_path / "typo.yaml"
    typo.write_text("name: Ada\nsystem_prompt: x\ngreting: hi\n")
    with pytest.raises(VoicebotError, match=r"field 'greting'"):
        load_persona(str(typo))

    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("name: Ada\nsystem_prompt: x\nblocklist: 3\n")
    with pytest.raises(VoicebotError, match=r"field 'blocklist'"):
        load_persona(str(wrong_type))

    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("name: [unclosed\n")
    with pytest.raises(VoicebotError, match="not valid YAML"):
        load_persona(str(not_yaml))

    with pytest.raises(VoicebotError, match="not found"):
        load_persona(str(tmp_path / "absent.yaml"))
