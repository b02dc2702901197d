"""The persona's refusal line, synthesized locally with Piper (not asked of the realtime model).

Why local: the refusal is spoken exactly when the model has just said something it must not, or when its
input was refused. Asking that same model to "say exactly this" would put the safety fallback in the hands
of the component that failed, needs a round trip, may be paraphrased (and would then itself have to pass
hold-back), and cannot work while the server is unreachable. Piper is deterministic, offline and already
installed; the price is that the refusal is in the Piper voice, not the model's voice.

The line is synthesized once per session, when the pipeline is built, and kept as pcm16 at 24 kHz (the rate of
the model's audio), so speaking it costs nothing when it is needed.
"""

from __future__ import annotations

from bot.audio import resample, to_pcm
from bot.config import TTSConfig
from bot.persona import Persona
from bot.services import models

RATE = 24000


def piper_voice_for(cfg: TTSConfig, persona: Persona) -> tuple[str, str]:
    """(onnx path, description) of the Piper voice that speaks the refusal: the cascade's TTS voice choice."""
    own = cfg.voice if cfg.provider == "piper" else ""  # tts.voice names an OpenAI voice otherwise
    folder, voice_id = models.resolve_piper_voice(own or persona.voices.get("piper", ""), cfg.voice_dir)
    return str(folder / f"{voice_id}.onnx"), f"piper {voice_id} (refusal line only)"


def synthesize_pcm24k(text: str, onnx_path: str) -> bytes:
    """``text`` spoken by the Piper voice at ``onnx_path``, as mono pcm16 at 24 kHz."""
    from bot.speech import synthesize

    audio, rate = synthesize(text, onnx_path)
    return to_pcm(resample(audio, rate, RATE))


class RefusalVoice:
    """The refusal line and its audio (pcm16, 24 kHz)."""

    def __init__(self, text: str, pcm: bytes) -> None:
        self.text = text
        self.pcm = pcm

    @classmethod
    def load(cls, text: str, onnx_path: str) -> RefusalVoice:
        """Synthesize now, while the pipeline is built (like the cascade loads its models), so nothing
        competes with the audio path for the CPU once the session runs."""
        return cls(text, synthesize_pcm24k(text, onnx_path))
