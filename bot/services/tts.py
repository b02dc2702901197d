"""The TTS stage: Piper, from a local voice file. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame
from pipecat.services.piper.tts import PiperTTSService

from bot.config import TTSConfig
from bot.cpu import SPEECH_FIRST
from bot.persona import Persona
from bot.services import models


FIRST_AUDIO_TIMEOUT_SECS = 10.0
"""pipecat ends a TTS context that produced no audio for 3 s and drops what comes later. Piper yields a
whole sentence at once, and with several sessions sharing two cores a sentence can take longer than that
(measured: 3.0-3.4 s with two `voicebot serve` sessions and other load), so the sentence would be lost."""


class VoicePiperTTSService(PiperTTSService):
    """Piper, with the CPU first while it synthesizes (see :mod:`bot.cpu`)."""

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        with SPEECH_FIRST.speaking():
            async for frame in super().run_tts(text, context_id):
                yield frame


def make_tts(cfg: TTSConfig, persona: Persona) -> tuple[PiperTTSService, str]:
    voice = cfg.voice or persona.voices.get("piper", "")
    folder, voice_id = models.resolve_piper_voice(voice, cfg.voice_dir)
    service = VoicePiperTTSService(settings=PiperTTSService.Settings(voice=voice_id), download_dir=folder,
                                   stop_frame_timeout_s=FIRST_AUDIO_TIMEOUT_SECS)
    return service, f"piper {voice_id} ({folder})"
