"""The STT stage: faster-whisper on a local CTranslate2 model, tuned for short voice turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from bot.config import STTConfig
from bot.errors import VoicebotError
from bot.services import models


class VoiceWhisperSTTService(WhisperSTTService):
    """pipecat's Whisper service with decoding settings chosen for latency on short turns.

    pipecat decodes with faster-whisper's defaults (beam search of 5, timestamps, conditioning on
    previous text). A voice turn is one short utterance, so greedy decoding without timestamps gives
    the same words for a fraction of the time. Thread count is configurable.
    """

    def __init__(self, *, beam_size: int = 1, cpu_threads: int = 0, **kwargs) -> None:
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        super().__init__(**kwargs)

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(str(self._settings.model), device=self._device,
                                   compute_type=self._compute_type, cpu_threads=self._cpu_threads)

    def transcribe_pcm(self, audio: bytes) -> str:
        """Blocking: 16-bit mono PCM at the pipeline rate -> text."""
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(
            samples,
            language=str(self._settings.language) if self._settings.language else None,
            beam_size=self._beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        threshold = self._settings.no_speech_prob
        return " ".join(s.text.strip() for s in segments
                        if threshold is None or s.no_speech_prob < threshold).strip()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        try:
            text = await asyncio.to_thread(self.transcribe_pcm, audio)
        except Exception as exc:  # a broken model must not take the session down silently
            yield ErrorFrame(error=f"speech recognition failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), self._settings.language)


def resolve_stt_model(cfg: STTConfig) -> tuple[str, str]:
    """Return (model dir or name, description) for the configured STT model."""
    if not cfg.model:
        mf = models.whisper_tiny_en()
        return str(mf.path), f"whisper tiny.en ({mf.package} {mf.version})"
    path = Path(cfg.model).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise VoicebotError(f"stt.model {path} is not a CTranslate2 Whisper folder (no model.bin)")
        return str(path), str(path)
    # A bare name such as "base.en" makes faster-whisper download from a model hub.
    raise VoicebotError(f"stt.model {cfg.model!r} is not a local folder: voicebot never downloads models at run "
                        "time; convert or download the model yourself and give its folder")


def make_stt(cfg: STTConfig) -> tuple[VoiceWhisperSTTService, str]:
    model, description = resolve_stt_model(cfg)
    try:
        language = Language(cfg.language)
    except ValueError:
        raise VoicebotError(f"stt.language {cfg.language!r} is not a language code Whisper knows (e.g. en)") from None
    service = VoiceWhisperSTTService(
        settings=WhisperSTTService.Settings(model=model, language=language),
        device=cfg.device,
        compute_type=cfg.compute_type,
        beam_size=cfg.beam_size,
        cpu_threads=cfg.cpu_threads,
    )
    return service, description
