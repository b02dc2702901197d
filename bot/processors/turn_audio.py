"""The user's speech as audio, one VAD segment at a time, for an LLM that hears (``mode = "audio-llm"``).

pipecat's segmented STT already cuts the input into speech segments at the VAD's boundaries (with a
second of audio from before the VAD fired, so the first syllable is kept). Audio-llm mode reuses that
cut, so the audio the LLM hears is exactly the audio Whisper transcribed for the audit log:

* :func:`store_transcribed`, given to the cascade's Whisper STT (``on_transcribed``), puts each segment it heard
  words in into a :class:`HeardSpeech` store, *before* its transcript goes on to the user aggregator.
  A segment Whisper hears no words in (a cough, a door) is not stored and starts no turn, as in the
  cascade.
* :class:`SpeechSegmenter` does the same cut without transcribing (``audio_llm.transcribe_for_audit =
  false``): every VAD segment is stored, with no text.

The audio LLM service takes segments out of the store when it answers a turn
(:mod:`bot.services.audio_llm`). Segments carry their transcript so that the turn the user aggregator
wrote to the context (``"what is the capital of France"``) is matched to exactly the segments it was
made of, whatever else is waiting in the store (the next turn's first segment, a refused turn).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pipecat.frames.frames import Frame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService

BYTES_PER_SAMPLE = 2  # 16-bit mono PCM, the pipeline's format


@dataclass(frozen=True)
class Segment:
    pcm: bytes
    """16-bit mono PCM at ``rate``."""
    rate: int
    text: str | None = None
    """What Whisper heard in it; None when not transcribing."""

    @property
    def secs(self) -> float:
        return len(self.pcm) / BYTES_PER_SAMPLE / self.rate


def _key(text: str) -> str:
    """Transcripts compared without regard to spacing (the aggregator joins segments with spaces)."""
    return "".join(text.split())


class HeardSpeech:
    """Segments heard and not yet answered or refused, oldest first. Thread-safe; bounded."""

    def __init__(self, max_secs: float = 600.0) -> None:
        self._segments: list[Segment] = []
        self._lock = threading.Lock()
        self._max_secs = max_secs

    def add(self, segment: Segment) -> None:
        with self._lock:
            self._segments.append(segment)
            while len(self._segments) > 1 and sum(s.secs for s in self._segments) > self._max_secs:
                self._segments.pop(0)  # nobody asked for these in time: never keep audio unbounded

    def __len__(self) -> int:
        with self._lock:
            return len(self._segments)

    def take_all(self) -> list[Segment]:
        with self._lock:
            taken, self._segments = self._segments, []
            return taken

    def take_for(self, text: str) -> list[Segment] | None:
        """The oldest run of consecutive segments whose transcripts make up ``text``; they and every older
        segment (heard but never answered) leave the store. None (store unchanged) if no run matches."""
        want = _key(text)
        if not want:
            return None
        with self._lock:
            for start in range(len(self._segments)):
                got = ""
                for end in range(start, len(self._segments)):
                    got += _key(self._segments[end].text or "")
                    if got == want:
                        run = self._segments[start:end + 1]
                        del self._segments[:end + 1]
                        return run
                    if not want.startswith(got):
                        break
            return None


def store_transcribed(heard: HeardSpeech):
    """A :data:`bot.services.stt.SegmentListener` that stores each transcribed segment in ``heard``
    (``make_stt(cfg, on_transcribed=store_transcribed(heard))``)."""

    def store(pcm: bytes, rate: int, text: str) -> None:
        heard.add(Segment(pcm=pcm, rate=rate, text=text))

    return store


class SpeechSegmenter(SegmentedSTTService):
    """Cuts the input into VAD speech segments like a segmented STT and stores each one, untranscribed."""

    def __init__(self, heard: HeardSpeech, **kwargs) -> None:
        super().__init__(trailing_silence_secs=0.0, ttfs_p99_latency=0.0,
                         settings=STTSettings(model=None, language=None), **kwargs)
        self._heard = heard

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        if audio:
            self._heard.add(Segment(pcm=audio, rate=self.sample_rate or 16000))
        return
        yield  # an async generator that yields nothing
