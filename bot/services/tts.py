"""The TTS stage: Piper, from a local voice file. Nothing is downloaded."""

from __future__ import annotations

from pipecat.services.piper.tts import PiperTTSService

from bot.config import TTSConfig
from bot.persona import Persona
from bot.services import models


def make_tts(cfg: TTSConfig, persona: Persona) -> tuple[PiperTTSService, str]:
    voice = cfg.voice or persona.voices.get("piper", "")
    folder, voice_id = models.resolve_piper_voice(voice, cfg.voice_dir)
    service = PiperTTSService(settings=PiperTTSService.Settings(voice=voice_id), download_dir=folder)
    return service, f"piper {voice_id} ({folder})"
