"""Personas: who the bot is, in every mode.

A persona is a YAML file (``personas/<name>.yaml``) validated by :class:`Persona`.
``load_persona("default")`` looks in the shipped ``personas/`` folder; a path loads that file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import VoicebotError

PERSONA_DIR = Path(__file__).resolve().parent.parent / "personas"


class Persona(BaseModel):
    """One persona file. Unknown keys are rejected so typos surface as errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    system_prompt: str = Field(min_length=1)
    greeting: str = ""
    refusal: str = Field(
        default="Sorry, I can't help with that.",
        description="Spoken instead of anything moderation blocks.",
    )
    fallback: str = Field(
        default="Sorry, I couldn't answer that. Could you say it again?",
        description="Spoken when a turn cannot be answered (the model failed or the turn is too long).",
    )
    style: str = Field(
        default="Keep every answer to one to three short spoken sentences, without lists, markdown or emoji.",
        description="Appended to the system prompt: how replies should sound when spoken. One or two plain "
                    "sentences of direction; a run of rule fragments ('no lists, no markdown') is what a small "
                    "model repeats instead of answering. Never spoken: see bot/prompt_leak.py.",
    )
    voices: dict[str, str] = Field(
        default_factory=dict,
        description="Voice per TTS backend, e.g. {piper: en_US-joe-medium, openai: alloy}.",
    )
    blocklist: list[str] = Field(default_factory=list, description="Terms the bot must not hear or say.")
    profanity: Literal["block", "allow"] = Field(
        default="block",
        description="Swearing aimed at no one ('damn, I missed the bus'): 'block' (family) or 'allow' (casual). "
                    "Abuse, hate and threats are blocked either way (docs/moderation.md).",
    )
    blocklist_regex: list[str] = Field(default_factory=list, description="Regexes, same purpose.")
    wake_words: list[str] = Field(default_factory=list, description="Extra names the bot answers to.")
    cue_lines: dict[Literal["smoke-alarm", "co-alarm"], str] = Field(
        default_factory=dict, description="What the bot says when it hears a sound cue (attention.cues); "
                                          "empty = a plain default warning.")

    source: str = Field(default="", exclude=True, description="Where the persona was loaded from.")
    sha256: str = Field(default="", exclude=True, description="SHA-256 of the persona file's bytes.")

    @property
    def instructions(self) -> str:
        """The full system prompt: persona prompt plus speaking style."""
        return f"{self.system_prompt.strip()}\n\n{self.style.strip()}".strip()


def list_personas() -> list[str]:
    return sorted(p.stem for p in PERSONA_DIR.glob("*.yaml"))


def resolve_persona_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise VoicebotError(f"persona file {candidate} not found: give an existing YAML file or one of: "
                                f"{', '.join(list_personas())}")
        return candidate
    shipped = PERSONA_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise VoicebotError(f"unknown persona {name_or_path!r}: choose one of {', '.join(list_personas())} "
                            "(see `voicebot personas list`) or give a path to a YAML file")
    return shipped


def load_persona(name_or_path: str = "default") -> Persona:
    path = resolve_persona_path(name_or_path)
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise VoicebotError(f"persona file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise VoicebotError(f"persona file {path} must be a YAML mapping with at least name and system_prompt")
    try:
        persona = Persona(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise VoicebotError(f"persona file {path}: field {field!r}: {err['msg']}") from None
    return persona.model_copy(update={"source": str(path), "sha256": hashlib.sha256(raw).hexdigest()})
