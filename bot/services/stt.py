"""The STT stage: faster-whisper on a local CTranslate2 model, tuned for short voice turns."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from bot.audio import pcm_to_float
from bot.config import STTConfig
from bot.cpu import SCHEDULER, Work, thread_plan
from bot.frames import NoWordsFrame
from bot.errors import VoicebotError
from bot.services import models


FRAMES_PER_SEC = 100
"""Whisper's log-mel frame rate (10 ms hop)."""
MAX_COMPRESSION_RATIO = 2.4
"""Whisper's own sign of a decoding loop (repeated text compresses well); such output is redone."""
TRAILING_SILENCE_SECS = 0.5
"""Silence appended to each segment so Whisper finishes the last word (pipecat's default)."""

MIN_LOOP_WORDS = 3
"""A span of this many words or more said twice in a row is taken for a decoding loop (see ``repeats_itself``)."""

SegmentListener = Callable[[bytes, int, str], None]
"""Called with (16-bit mono PCM without the appended silence, rate, transcript) of each segment heard as words."""


@functools.lru_cache(maxsize=2)
def _whisper_model(path: str, device: str, compute_type: str, cpu_threads: int):
    """One loaded model per process and setting: sessions (replays, Discord channels) share it."""
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)


def repeats_itself(text: str, min_words: int = MIN_LOOP_WORDS) -> bool:
    """True when a span of ``min_words`` or more words comes twice in a row ("What is the capital of France?
    What is the capital of France?"). Whisper loops like that in a short window, and a short text's
    compression ratio is too low to show it; people seldom repeat a whole phrase back to back."""
    words = ["".join(c for c in w.lower() if c.isalnum()) for w in text.split()]
    n = len(words)
    for size in range(min_words, n // 2 + 1):
        for i in range(n - 2 * size + 1):
            if words[i:i + size] == words[i + size:i + 2 * size]:
                return True
    return False


class HeardSegments:
    """Mixin for a segmented STT service (listed before it): hands each speech segment heard as words to
    ``self._on_transcribed`` (PCM without the silence appended for the model, rate, text) before its
    transcript goes on, so audio-llm has the audio by the time the user aggregator writes the turn."""

    _on_transcribed: SegmentListener | None = None
    _padding_secs: float = TRAILING_SILENCE_SECS

    def _hand_over(self, audio: bytes, text: str) -> None:
        if self._on_transcribed is not None and text.strip():
            rate = self.sample_rate or 16000  # type: ignore[attr-defined]
            pad = int(self._padding_secs * rate) * 2
            self._on_transcribed(audio[: len(audio) - pad] if 0 < pad < len(audio) else audio, rate, text)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        async for frame in super().run_stt(audio):  # type: ignore[misc]
            if isinstance(frame, TranscriptionFrame):
                self._hand_over(audio, frame.text)
            yield frame


class VoiceWhisperSTTService(HeardSegments, WhisperSTTService):
    """pipecat's Whisper service, decoding one voice turn for latency.

    pipecat calls faster-whisper's general ``transcribe`` (30 s window, temperature fallback, beam 5).
    A voice turn is one short utterance, so this service encodes it in a shorter window
    (``stt.window_secs``, 5 s by default; a longer turn gets a window of its own length): the
    encoder's cost grows with the window, and Whisper pads every input to 30 s otherwise. It decodes
    greedily without timestamps. If the short window makes
    the model loop (compression ratio above Whisper's 2.4), the turn is decoded again in the full 30 s
    window; so is a turn whose text says a phrase twice in a row (``repeats_itself``), the loop a short text's
    compression ratio does not show. ``benchmarks/latency.py`` measures both.
    """

    def __init__(self, *, beam_size: int = 1, cpu_threads: int = 0, window_secs: int = 10,
                 trailing_silence_secs: float = TRAILING_SILENCE_SECS,
                 on_transcribed: SegmentListener | None = None, **kwargs) -> None:
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        self._window_frames = window_secs * FRAMES_PER_SEC
        self._tokenizer = None
        self._padding_secs = trailing_silence_secs
        self._on_transcribed = on_transcribed
        super().__init__(trailing_silence_secs=trailing_silence_secs, **kwargs)

    def _load(self) -> None:
        from faster_whisper.tokenizer import Tokenizer

        self._model = _whisper_model(str(self._settings.model), self._device, self._compute_type,
                                     self._cpu_threads or thread_plan().stt)
        language = str(self._settings.language) if self._settings.language else "en"
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                                    task="transcribe", language=language)

    def _decode(self, features: np.ndarray, frames: int, duration: float):
        import ctranslate2

        padded = np.pad(features, ((0, 0), (0, max(0, frames - features.shape[1]))))
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(padded[np.newaxis])), to_cpu=False)
        prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        result = self._model.model.generate(
            encoded, [prompt], beam_size=self._beam_size, suppress_blank=True, suppress_tokens=[-1],
            max_length=min(224, int(duration * 12) + 24), return_no_speech_prob=True)[0]
        return self._tokenizer.decode(result.sequences_ids[0]).strip(), result.no_speech_prob

    def transcribe_pcm(self, audio: bytes) -> str:
        """Blocking: 16-bit mono PCM at the pipeline rate -> text. One job on the CPU scheduler (bot/cpu.py)."""
        with SCHEDULER.job(Work.STT):
            return self._transcribe(audio)

    def _transcribe(self, audio: bytes) -> str:
        from faster_whisper.transcribe import get_compression_ratio

        samples = pcm_to_float(audio)
        duration = len(samples) / 16000
        features = self._model.feature_extractor(samples)
        text, no_speech = self._decode(features, max(self._window_frames, features.shape[1]), duration)
        looping = text and (get_compression_ratio(text) > MAX_COMPRESSION_RATIO or repeats_itself(text))
        if looping and self._window_frames < 3000:
            text, no_speech = self._decode(features, max(3000, features.shape[1]), duration)
        threshold = self._settings.no_speech_prob
        if threshold is not None and no_speech >= threshold and len(text.split()) < 3:
            return ""  # most likely not speech: a cough, a door, the bot's own echo tail
        return text

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
            self._hand_over(audio, text)  # (this run_stt replaces the mixin's)
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), self._settings.language)
        else:
            yield NoWordsFrame()  # the end-of-turn strategy tells a false interruption by it


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


OPENAI_STT_MODEL = "whisper-1"


class VoiceOpenAISTTService(HeardSegments, OpenAISTTService):
    """pipecat's OpenAI STT service, handing each segment heard as words to ``on_transcribed``."""

    def __init__(self, *, on_transcribed: SegmentListener | None = None, **kwargs) -> None:
        self._on_transcribed = on_transcribed
        self._padding_secs = TRAILING_SILENCE_SECS
        super().__init__(trailing_silence_secs=TRAILING_SILENCE_SECS, **kwargs)


def make_openai_stt(cfg: STTConfig, *,
                    on_transcribed: SegmentListener | None = None) -> tuple[SegmentedSTTService, str]:
    """pipecat's OpenAI STT service against any ``/v1/audio/transcriptions`` server: each VAD speech
    segment is sent as a WAV file, the ``text`` of the answer is the transcript."""
    from bot.services.keys import api_key_from_env

    key = api_key_from_env(cfg.api_key_env, cfg.base_url,
                           missing=f"stt.provider = openai needs an API key in ${cfg.api_key_env} (or set "
                                   "stt.base_url to a local server such as speaches)")
    try:
        language = Language(cfg.language)
    except ValueError:
        raise VoicebotError(f"stt.language {cfg.language!r} is not a language code (e.g. en)") from None
    model = cfg.model or OPENAI_STT_MODEL
    service = VoiceOpenAISTTService(api_key=key, base_url=cfg.base_url, on_transcribed=on_transcribed,
                                    settings=OpenAISTTService.Settings(model=model, language=language))
    return service, f"openai {model} at {cfg.base_url or 'api.openai.com'}"


def make_stt(cfg: STTConfig, *, on_transcribed: SegmentListener | None = None) -> tuple[SegmentedSTTService, str]:
    """The STT stage. ``on_transcribed``: called with each speech segment heard as words, before its transcript
    goes on (audio-llm stores the audio the model hears this way)."""
    if cfg.provider == "openai":
        return make_openai_stt(cfg, on_transcribed=on_transcribed)
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
        window_secs=cfg.window_secs,
        on_transcribed=on_transcribed,
    )
    return service, description
