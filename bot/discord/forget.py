"""``/forget``: delete one speaker's audio from the running session's audit directory, verifiably.

The audit log is hash-chained and its ``turn`` records carry the SHA-256 of each audio file, so a deleted
file would look like tampering. Instead of rewriting history, ``/forget``:

1. waits until everything queued for the log is on disk (so the speaker's finished turns are in it),
2. deletes the user-audio files of every ``turn`` record whose ``speaker`` is the caller's label,
3. appends a ``privacy.forget`` record naming each deleted file with the SHA-256 the log had for it.

``voicebot audit verify`` accepts a missing file when a *later* ``privacy.forget`` record names it with the
same hash (reported as a warning, counted in ``forgotten_audio``); a file deleted any other way still
breaks verification. Transcripts stay: they are part of the chain. The bot's replies are the bot's audio
and are kept. A turn still in flight when ``/forget`` runs is written afterwards, as usual.

Record ``privacy.forget``: ``{speaker, user_id, requested_by, deleted: [{path, sha256, turn}], missing:
[path], kept: "transcripts and bot audio"}`` (``path``, not ``file``: these are no longer audio references).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bot.audit import AuditWriter, read_session

FORGET_TYPE = "privacy.forget"


@dataclass
class ForgetResult:
    speaker: str
    deleted: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    turns: int = 0

    def message(self) -> str:
        if not self.turns:
            return f"Nothing to forget: no recorded turn of {self.speaker} in this session."
        files = len(self.deleted)
        return (f"Deleted {files} audio file{'s' if files != 1 else ''} of {self.speaker} from this session's "
                f"audit log ({self.turns} turn{'s' if self.turns != 1 else ''}); the deletion itself is logged. "
                "Transcripts are kept.")


def _user_audio(summary: dict[str, Any]) -> dict[str, Any] | None:
    user = summary.get("user")
    ref = user.get("audio") if isinstance(user, dict) else None
    if isinstance(ref, dict) and isinstance(ref.get("file"), str) and isinstance(ref.get("sha256"), str):
        return ref
    return None


def forget_speaker(writer: AuditWriter, speaker: str, *, user_id: int | None = None,
                   requested_by: str | None = None, timeout: float = 30.0) -> ForgetResult:
    """Blocking (file I/O): from asyncio, run it with ``asyncio.to_thread``."""
    writer.flush(timeout)
    root = Path(writer.dir)
    session = read_session(root)
    result = ForgetResult(speaker)
    already = set()
    for rec in session.records:
        if rec.get("type") == FORGET_TYPE:
            already.update(d.get("path") for d in rec["data"].get("deleted") or [] if isinstance(d, dict))
    for turn in session.turns:
        summary = turn.summary
        if not summary or summary.get("speaker") != speaker:
            continue
        result.turns += 1
        ref = _user_audio(summary)
        if ref is None or ref["file"] in already:
            continue
        rel = PurePosixPath(ref["file"])
        if rel.is_absolute() or ".." in rel.parts:
            continue
        path = root.joinpath(*rel.parts)
        try:
            os.remove(path)
        except FileNotFoundError:
            result.missing.append(ref["file"])
            continue
        result.deleted.append({"path": ref["file"], "sha256": ref["sha256"], "turn": turn.number})
    if result.deleted:
        _fsync_dir(root / "audio")
    if result.turns:
        writer.record(FORGET_TYPE, {"speaker": speaker, "user_id": user_id, "requested_by": requested_by or speaker,
                                    "deleted": result.deleted, "missing": result.missing,
                                    "kept": "transcripts and bot audio"})
        writer.flush(timeout)
    return result


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
