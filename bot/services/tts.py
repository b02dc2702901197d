"""The TTS stage: Piper from a local voice file (nothing is downloaded), an OpenAI-compatible speech server, or
Coqui TTS from a local model folder (bot/services/coqui.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path

from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService

from bot.config import TTSConfig
from bot.cpu import SPEECH_FIRST
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.services import models


FIRST_AUDIO_TIMEOUT_SECS = 10.0
"""pipecat ends a TTS context that produced no audio for 3 s and drops what comes later. Piper yields a
whole sentence at once, and with several sessions sharing two cores a sentence can take longer than that
(measured: 3.0-3.4 s with two `voicebot serve` sessions and other load), so the sentence would be lost."""


class LocalTTSService(TTSService):
    """A TTS model that runs in this process: its synthesis streams as pipecat audio frames with the CPU first
    (see :mod:`bot.cpu`), and a failing synthesis ends the reply with an error frame, not the session.
    Subclasses give :meth:`pcm_pieces` and :attr:`output_rate`."""

    output_rate: int
    """The rate of the 16-bit mono PCM that :meth:`pcm_pieces` yields."""

    def can_generate_metrics(self) -> bool:
        return True

    def pcm_pieces(self, text: str) -> AsyncIterator[bytes]:
        """16-bit mono PCM for ``text``, piece by piece (each piece made off the event loop)."""
        raise NotImplementedError

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        with SPEECH_FIRST.speaking():
            try:
                await self.start_tts_usage_metrics(text)
                async for frame in self._stream_audio_frames_from_iterator(
                        self.pcm_pieces(text), in_sample_rate=self.output_rate, context_id=context_id):
                    await self.stop_ttfb_metrics()
                    yield frame
            except Exception as exc:  # a broken voice must not take the session down silently
                yield ErrorFrame(error=f"speech synthesis failed: {exc}")
            finally:
                await self.stop_ttfb_metrics()


class VoicePiperTTSService(LocalTTSService):
    """Piper from a local voice file, the loaded voice shared by every session of the process
    (:func:`bot.services.models.load_piper_voice`; pipecat's ``PiperTTSService`` loads its own copy per
    instance), with the CPU first while it synthesizes (see :mod:`bot.cpu`)."""

    Settings = PiperTTSService.Settings

    def __init__(self, onnx_path: Path, **kwargs) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True,
                         settings=self.Settings(model=None, voice=onnx_path.name[: -len(".onnx")], language=None),
                         **kwargs)
        self._piper = models.load_piper_voice(str(onnx_path))
        self.output_rate = self._piper.config.sample_rate

    async def pcm_pieces(self, text: str) -> AsyncIterator[bytes]:
        def pieces() -> Iterator[bytes]:
            for chunk in self._piper.synthesize(text):  # one chunk per sentence Piper finds in the text
                yield chunk.audio_int16_bytes

        it = pieces()
        while (pcm := await asyncio.to_thread(next, it, None)) is not None:
            yield pcm


OPENAI_TTS_MODEL = "gpt-4o-mini-tts"
OPENAI_TTS_RATE = 24000
"""``response_format = "pcm"`` of /v1/audio/speech: 24 kHz mono 16-bit little-endian, by the API's definition."""


def make_openai_tts(cfg: TTSConfig, persona: Persona) -> tuple[TTSService, str]:
    """pipecat's OpenAI TTS service against any ``/v1/audio/speech`` server, streaming 24 kHz PCM."""
    from pipecat.services.openai.tts import VALID_VOICES, OpenAITTSService

    from bot.services.keys import api_key_from_env

    key = api_key_from_env(cfg.api_key_env, cfg.base_url,
                           missing=f"tts.provider = openai needs an API key in ${cfg.api_key_env} (or set "
                                   "tts.base_url to a local server such as speaches or Kokoro-FastAPI)")
    voice = cfg.voice or persona.voices.get("openai", "") or "alloy"
    if voice not in VALID_VOICES:
        raise VoicebotError(f"tts.voice {voice!r} is not an OpenAI speech voice: use one of "
                            f"{', '.join(sorted(VALID_VOICES))}")
    model = cfg.model or OPENAI_TTS_MODEL
    service = OpenAITTSService(api_key=key, base_url=cfg.base_url, sample_rate=OPENAI_TTS_RATE,
                               settings=OpenAITTSService.Settings(model=model, voice=voice),
                               stop_frame_timeout_s=FIRST_AUDIO_TIMEOUT_SECS)
    return service, f"openai {model} voice {voice} at {cfg.base_url or 'api.openai.com'}"


def make_tts(cfg: TTSConfig, persona: Persona) -> tuple[TTSService, str]:
    if cfg.provider == "openai":
        return make_openai_tts(cfg, persona)
    if cfg.provider == "coqui":
        from bot.services.coqui import make_coqui_tts

        return make_coqui_tts(cfg, persona, stop_frame_timeout_s=FIRST_AUDIO_TIMEOUT_SECS)
    voice = cfg.voice or persona.voices.get("piper", "")
    folder, voice_id = models.resolve_piper_voice(voice, cfg.voice_dir)
    service = VoicePiperTTSService(folder / f"{voice_id}.onnx", stop_frame_timeout_s=FIRST_AUDIO_TIMEOUT_SECS)
    return service, f"piper {voice_id} ({folder})"
