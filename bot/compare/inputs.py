"""What a comparison is run on: a recording, a folder of recordings, or an audit session's user turns.

A recording may carry a reference transcript for word error rate: ``question.wav`` + ``question.txt``
beside it (plain text, what is said in the recording). An audit session is fed to each variant the way
``voicebot replay`` feeds it (its recorded user turns, in order, one new session per variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bot.audit.chain import EVENTS_FILE
from bot.errors import VoicebotError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class InputItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    """Unique label (the file's stem, or the audit session's folder name)."""
    kind: Literal["audio", "audit"]
    path: Path
    reference: str | None = None
    """What is said (for word error rate), if known."""


def reference_for(audio: Path) -> str | None:
    side = audio.with_suffix(".txt")
    if side.is_file():
        text = side.read_text(encoding="utf-8", errors="replace").strip()
        return text or None
    return None


def resolve_inputs(paths: list[Path]) -> list[InputItem]:
    """Expand every ``--input``: an audio file, a folder (its audio files, sorted), or an audit session."""
    items: list[InputItem] = []
    for path in paths:
        if not path.exists():
            raise VoicebotError(f"input {path} does not exist: give a recording, a folder of recordings or an "
                                "audit session folder")
        if path.is_dir() and (path / EVENTS_FILE).is_file():
            items.append(InputItem(name=path.name, kind="audit", path=path))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise VoicebotError(f"folder {path} holds no recording ({', '.join(AUDIO_SUFFIXES)}) and is not an "
                                    "audit session")
            items += [InputItem(name=p.stem, kind="audio", path=p, reference=reference_for(p)) for p in found]
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            items.append(InputItem(name=path.stem, kind="audio", path=path, reference=reference_for(path)))
        else:
            raise VoicebotError(f"input {path} is not a recording ({', '.join(AUDIO_SUFFIXES)}), a folder or an "
                                "audit session")
    seen: dict[str, int] = {}
    unique: list[InputItem] = []
    for item in items:  # two inputs with the same stem get distinct labels (and output files)
        n = seen.get(item.name, 0)
        seen[item.name] = n + 1
        unique.append(item if n == 0 else item.model_copy(update={"name": f"{item.name}-{n + 1}"}))
    if not unique:
        raise VoicebotError("no input: give --input with a recording, a folder of recordings or an audit session")
    return unique
