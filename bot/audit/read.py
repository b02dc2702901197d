"""Reading a session's audit log into plain structures (for ``show``, replay and reports).

Reading is lenient: it does not check the chain (that is :func:`bot.audit.verify.verify`'s job) and
skips lines it cannot parse, so a damaged or killed session can still be looked at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.audit.chain import EVENTS_FILE
from bot.errors import VoicebotError


@dataclass
class Turn:
    """Everything logged about one turn: its ``turn`` summary (None if the session stopped before
    it was written) and the other records whose ``data.turn`` is this number, in log order."""

    number: int
    summary: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.summary is not None

    def events_of(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.events if r.get("type") == type_]


@dataclass
class Session:
    dir: Path
    header: dict[str, Any]
    """``data`` of the ``session.start`` record ({} if missing)."""
    records: list[dict[str, Any]]
    """Every parsed record in log order."""
    turns: list[Turn]
    """Turns in order of first appearance."""
    end: dict[str, Any] | None
    """``data`` of ``session.end``; None if the session did not end cleanly."""
    other: list[dict[str, Any]]
    """Records that belong to no turn (besides session.start/end)."""
    bad_lines: list[int] = field(default_factory=list)
    truncated: bool = False

    @property
    def schema_version(self) -> str | None:
        return self.header.get("schema_version")

    def audio_path(self, ref: dict[str, Any] | None) -> Path | None:
        return self.dir / ref["file"] if ref and isinstance(ref.get("file"), str) else None


def read_session(session_dir: str | Path) -> Session:
    root = Path(session_dir)
    events = root / EVENTS_FILE
    if not events.is_file():
        raise VoicebotError(f"no audit log at {root}: pass a session directory such as "
                            "audits/20261122T115000Z-3f9a1c (it holds events.jsonl)")
    raw = events.read_bytes()
    pieces = raw.split(b"\n")
    partial = pieces.pop()
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(pieces, start=1):
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad.append(number)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("type"), str):
            if not isinstance(rec.get("data"), dict):
                rec["data"] = {"value": rec.get("data")}
            records.append(rec)
        else:
            bad.append(number)

    header: dict[str, Any] = {}
    end: dict[str, Any] | None = None
    turns: dict[int, Turn] = {}
    other: list[dict[str, Any]] = []
    for rec in records:
        kind, data = rec["type"], rec["data"]
        if kind == "session.start" and not header:
            header = data
            continue
        if kind == "session.end":
            end = data
            continue
        number = data.get("turn")
        if isinstance(number, int) and not isinstance(number, bool):
            turn = turns.setdefault(number, Turn(number))
            if kind == "turn" and turn.summary is None:
                turn.summary = data
            else:
                turn.events.append(rec)
        else:
            other.append(rec)
    return Session(dir=root, header=header, records=records, turns=list(turns.values()), end=end,
                   other=other, bad_lines=bad, truncated=bool(partial))


def list_sessions(base_dir: str | Path) -> list[Path]:
    """Session directories under ``base_dir`` (those holding events.jsonl), oldest first."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / EVENTS_FILE).is_file())
