"""``tts.provider = "coqui"``: Coqui TTS (the ``coqui-tts`` package, the maintained fork of ``TTS``) from a local
model directory — VITS or XTTS-v2. Optional, installed by hand (README, *Coqui TTS*: coqui-tts needs torch with a
matching torchaudio and torchcodec).

Nothing is downloaded: ``tts.voice`` (else the persona's ``voices.coqui``) names a folder holding the model's
``config.json`` and its checkpoint (``model.pth``, ``model_file.pth``, ``best_model.pth`` or
``checkpoint_*.pth``; XTTS-v2 also ``vocab.json``). The speaker is ``tts.speaker`` (else the persona's
``voices.coqui_speaker``): a speaker name of a multi-speaker model (VITS on VCTK: ``p225``; XTTS-v2's built-in
speakers), or a reference ``.wav`` that XTTS-v2 clones. Each piece of the reply (a sentence, as the output
gate hands it over) is synthesized on a worker thread and streamed as soon as it is ready, like Piper.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.services.tts_service import TTSService

from bot.audio import to_pcm
from bot.config import TTSConfig
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.services.tts import LocalTTSService

CHECKPOINTS = ("model.pth", "model_file.pth", "best_model.pth")
GET_A_MODEL = ("download one on a machine with internet, e.g. `pip install coqui-tts && tts --model_name "
               "tts_models/en/vctk/vits --text hi --out_path /tmp/hi.wav` (it lands in ~/.local/share/tts/), "
               "copy that folder here and set tts.voice (or the persona's voices.coqui) to it")


@dataclass(frozen=True)
class CoquiVoice:
    folder: Path
    kind: str
    """``xtts`` or the model name in config.json (``vits``, ...)."""
    checkpoint: Path | None
    speaker: str
    speaker_wav: Path | None
    language: str


def resolve_voice(cfg: TTSConfig, persona: Persona) -> CoquiVoice:
    """The model folder, kind and speaker, checked before anything loads; one line on every problem."""
    where = cfg.voice or persona.voices.get("coqui", "")
    if not where:
        raise VoicebotError("tts.provider is 'coqui' but no model folder is set: set tts.voice or the persona's "
                            f"voices.coqui to a local Coqui model folder; {GET_A_MODEL}")
    folder = Path(where).expanduser()
    if not folder.is_dir():
        raise VoicebotError(f"Coqui model folder {folder} does not exist (voicebot never downloads models); "
                            f"{GET_A_MODEL}")
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise VoicebotError(f"{folder} has no config.json: it is not a Coqui model folder; {GET_A_MODEL}") from None
    except (OSError, ValueError) as exc:
        raise VoicebotError(f"{config_path} could not be read ({type(exc).__name__}): re-copy the model") from None
    kind = str(config.get("model", "")).lower()
    checkpoint = None
    if kind != "xtts":
        found = [folder / n for n in CHECKPOINTS if (folder / n).is_file()] or sorted(folder.glob("checkpoint_*.pth"))
        if not found:
            raise VoicebotError(f"{folder} has no model checkpoint ({', '.join(CHECKPOINTS)}): re-copy the model")
        checkpoint = found[0]
    elif not (folder / "model.pth").is_file():
        raise VoicebotError(f"{folder} is an XTTS model folder without model.pth: re-copy the model")
    speaker = cfg.speaker or persona.voices.get("coqui_speaker", "")
    speaker_wav = None
    if speaker.lower().endswith(".wav"):
        speaker_wav = Path(speaker).expanduser()
        if not speaker_wav.is_file():
            raise VoicebotError(f"reference voice {speaker_wav} does not exist: give a .wav of the voice to clone "
                                "(XTTS-v2), or a speaker name")
        if kind != "xtts":
            raise VoicebotError(f"{folder} is a {kind or 'non-XTTS'} model: only XTTS-v2 clones a reference .wav; "
                                "give a speaker name instead")
        speaker = ""
    return CoquiVoice(folder=folder, kind=kind, checkpoint=checkpoint, speaker=speaker, speaker_wav=speaker_wav,
                      language=cfg.language)


@functools.lru_cache(maxsize=4)
def load_synthesizer(folder: str, checkpoint: str | None) -> tuple[Any, threading.Lock]:
    """One loaded model per folder and process (with the lock serializing its syntheses)."""
    try:
        from TTS.utils.synthesizer import Synthesizer
    except ImportError as exc:
        if getattr(exc, "name", None) == "TTS":
            raise VoicebotError("tts.provider is 'coqui' but coqui-tts is not installed: see README, Coqui TTS, "
                                "for the install line") from None
        detail = " ".join(str(exc).split())[:160]
        raise VoicebotError(f"coqui-tts is installed but cannot be imported ({detail}): it needs torch with a "
                            "matching torchaudio and torchcodec, see README, Coqui TTS") from None
    try:
        if checkpoint is None:  # XTTS-v2 loads itself from its folder
            synth = Synthesizer(model_dir=folder)
        else:
            synth = Synthesizer(tts_checkpoint=checkpoint, tts_config_path=str(Path(folder) / "config.json"))
    except VoicebotError:
        raise
    except Exception as exc:  # a broken or incompatible checkpoint
        raise VoicebotError(f"Coqui could not load the model in {folder} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return synth, threading.Lock()


def check_speaker(synth: Any, voice: CoquiVoice) -> None:
    """A multi-speaker model needs a speaker it knows; a single-speaker one takes none."""
    manager = getattr(synth.tts_model, "speaker_manager", None)
    names = list(getattr(manager, "name_to_id", {}) or {}) if manager is not None else []
    if voice.kind == "xtts":
        if not voice.speaker_wav and not voice.speaker:
            raise VoicebotError("XTTS-v2 needs a voice: set tts.speaker (or the persona's voices.coqui_speaker) to "
                                "a reference .wav to clone or one of its speaker names")
        if voice.speaker and names and voice.speaker not in names:
            raise VoicebotError(f"XTTS-v2 has no speaker {voice.speaker!r}: use one of {', '.join(names[:8])}…")
        return
    if names and voice.speaker not in names:
        raise VoicebotError(f"the Coqui model in {voice.folder} has several speakers: set tts.speaker (or the "
                            f"persona's voices.coqui_speaker) to one of {', '.join(sorted(names)[:8])}"
                            + ("…" if len(names) > 8 else ""))
    if voice.speaker and not names:
        raise VoicebotError(f"the Coqui model in {voice.folder} has a single voice: leave tts.speaker empty")


class CoquiTTSService(LocalTTSService):
    """Coqui TTS from a local model, sentence by sentence on a worker thread, with the CPU first (bot/cpu.py)."""

    def __init__(self, voice: CoquiVoice, **kwargs: Any) -> None:
        self._voice = voice
        self._synth, self._lock = load_synthesizer(str(voice.folder), str(voice.checkpoint) if voice.checkpoint
                                                   else None)
        check_speaker(self._synth, voice)
        self.output_rate = int(self._synth.output_sample_rate)
        super().__init__(push_start_frame=True, push_stop_frames=True, **kwargs)

    def synthesize(self, text: str) -> bytes:
        """One piece of text as 16-bit PCM at :attr:`output_rate` (blocking)."""
        kwargs: dict[str, Any] = {"split_sentences": False}
        if self._voice.speaker:
            kwargs["speaker_name"] = self._voice.speaker
        if self._voice.speaker_wav is not None:
            kwargs["speaker_wav"] = str(self._voice.speaker_wav)
        if self._voice.kind == "xtts":
            kwargs["language_name"] = self._voice.language
        with self._lock:
            wav = self._synth.tts(text, **kwargs)
        return to_pcm(np.asarray(wav, dtype=np.float32))

    async def pcm_pieces(self, text: str) -> AsyncIterator[bytes]:
        for sentence in self._synth.split_into_sentences(text) or [text]:
            if sentence.strip():
                yield await asyncio.to_thread(self.synthesize, sentence)


def make_coqui_tts(cfg: TTSConfig, persona: Persona, **kwargs: Any) -> tuple[TTSService, str]:
    voice = resolve_voice(cfg, persona)
    service = CoquiTTSService(voice, **kwargs)
    who = f", speaker {voice.speaker}" if voice.speaker else (f", cloning {voice.speaker_wav.name}"
                                                             if voice.speaker_wav else "")
    return service, f"coqui {voice.kind or 'model'} {voice.folder.name}{who} ({service.output_rate} Hz)"
