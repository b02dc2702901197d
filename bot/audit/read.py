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

    def forgotten_audio(self) -> dict[str, int]:
        """``{file: seq}`` of audio that ``privacy.forget`` records say was deleted on request
        (``data.deleted = [{path, sha256, ...}]``); ``verify`` accepts those files being missing."""
        found: dict[str, int] = {}
        for rec in self.records:
            if rec.get("type") == "privacy.forget":
                for item in rec["data"].get("deleted") or []:
                    if isinstance(item, dict) and isinstance(item.get("path"), str):
                        found.setdefault(item["path"], rec.get("seq", -1))
        return found

    def views(self) -> list[TurnView]:
        """Every turn through :func:`turn_view`, in order."""
        return [turn_view(t) for t in self.turns]


STAGED = frozenset({
    "user.started_speaking", "user.stopped_speaking", "stt.final", "user.text", "moderation.verdict",
    "llm.sentence", "bot.started_speaking", "bot.stopped_speaking", "bot.interrupted",
})
"""Staged event types (docs/audit-log.md): shown only on request by ``show``, folded away by reports."""


def blocked(verdict: Any) -> bool:
    """A verdict that blocked its text (``allowed`` is explicitly false)."""
    return isinstance(verdict, dict) and verdict.get("allowed") is False


def num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ms_text(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def verdict_summary(v: dict[str, Any], plain: Any) -> tuple[str, list[str]]:
    """A verdict as ("allowed" | "BLOCKED" | "unknown", ["action=...", "categories=...", ...]), for ``show``
    and the HTML report; ``plain`` renders a non-list ``categories`` value."""
    allowed = v.get("allowed")
    head = "allowed" if allowed is True else "BLOCKED" if allowed is False else "unknown"
    parts = []
    if v.get("action") and (allowed is False or v.get("action") != "allow"):
        parts.append(f"action={v['action']}")
    cats = v.get("categories")
    if cats:
        parts.append("categories=" + (",".join(map(str, cats)) if isinstance(cats, list) else plain(cats)))
    if v.get("reason"):
        parts.append(f"reason={json.dumps(str(v['reason']), ensure_ascii=False)}")
    if v.get("backend"):
        parts.append(f"backend={v['backend']}")
    if num(v.get("latency_ms")) is not None:
        parts.append(ms_text(float(v["latency_ms"])))
    return head, parts


@dataclass
class TurnView:
    """One turn as a reviewer sees it, whether or not its ``turn`` summary was written.

    A complete turn is read from its summary; an incomplete one (the session stopped during it) is
    rebuilt from its staged events. ``show``, ``voicebot audit report`` and ``voicebot replay`` all
    read turns through this, so they agree on what was heard, blocked and spoken.
    """

    number: int
    complete: bool
    speaker: str | None
    modality: str
    """``voice`` or ``text`` (typed: ``voicebot chat``, Discord messages); logs before it was recorded: voice."""
    user: dict[str, Any] | None
    """The summary's ``user`` object; None for a bot-initiated turn or an incomplete one."""
    heard: str | None
    input_verdict: dict[str, Any] | None
    generated: list[str]
    output_verdicts: list[Any]
    verdict_texts: list[str | None]
    """The text each output verdict judged (from the verdict, else its ``moderation.verdict`` event)."""
    spoken: str | None
    """What was played; None when unknown (the turn did not finish)."""
    interrupted: bool
    refused: bool
    user_audio: dict[str, Any] | None
    bot_audio: dict[str, Any] | None
    timings: dict[str, Any]
    errors: list[str]
    summary: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def bot_initiated(self) -> bool:
        return self.complete and self.user is None

    @property
    def input_blocked(self) -> bool:
        return blocked(self.input_verdict)

    @property
    def blocked_texts(self) -> set[str]:
        return {t for t, v in zip(self.verdict_texts, self.output_verdicts) if t and blocked(v)}

    @property
    def output_blocked(self) -> bool:
        return any(blocked(v) for v in self.output_verdicts)

    @property
    def start_s(self) -> float | None:
        return num(self.user.get("start_s")) if self.user else None

    @property
    def end_s(self) -> float | None:
        return num(self.user.get("end_s")) if self.user else None

    @property
    def bot_span(self) -> tuple[float | None, float | None]:
        bot = self.summary.get("bot")
        if isinstance(bot, dict):
            return num(bot.get("start_s")), num(bot.get("end_s"))
        started = [num(r["data"].get("t")) for r in self.events if r.get("type") == "bot.started_speaking"]
        stopped = [num(r["data"].get("t")) for r in self.events if r.get("type") == "bot.stopped_speaking"]
        return (started[0] if started else None), (stopped[-1] if stopped else None)

    @property
    def extra_events(self) -> list[dict[str, Any]]:
        """Records of this turn that are neither staged events nor errors (e.g. newer record types)."""
        return [r for r in self.events if r.get("type") not in STAGED and r.get("type") != "error"]


def turn_view(turn: Turn) -> TurnView:
    summary = turn.summary or {}
    user = summary.get("user") if isinstance(summary.get("user"), dict) else None
    verdict_events = turn.events_of("moderation.verdict")
    in_events = [r["data"] for r in verdict_events if r["data"].get("stage") == "input"]
    out_events = [r["data"] for r in verdict_events if r["data"].get("stage") == "output"]
    if turn.complete:
        heard = user.get("transcript") if user else None
        input_verdict = summary.get("input_verdict")
        generated = [str(g) for g in summary.get("generated") or []]
        verdicts = list(summary.get("output_verdicts") or [])
        spoken = summary.get("spoken")
        interrupted = bool(summary.get("interrupted"))
    else:
        finals = turn.events_of("stt.final") or turn.events_of("user.text")
        heard = finals[-1]["data"].get("text") if finals else None
        input_verdict = in_events[-1].get("verdict") if in_events else None
        generated = [str(r["data"].get("text", "")) for r in turn.events_of("llm.sentence")]
        verdicts = [e.get("verdict") for e in out_events]
        cut = turn.events_of("bot.interrupted")
        spoken = cut[-1]["data"].get("spoken_text") if cut else None
        interrupted = bool(cut)
    texts: list[str | None] = []
    for i, v in enumerate(verdicts):
        text = v.get("text") if isinstance(v, dict) else None
        if text is None and i < len(out_events):
            text = out_events[i].get("text")
        texts.append(text)
    errors = [str(e) for e in summary.get("errors") or []]
    errors += [f"{r['data'].get('stage', '?')}: {r['data'].get('message', '')}" for r in turn.events_of("error")]
    timings = summary.get("timings")
    return TurnView(
        number=turn.number, complete=turn.complete, speaker=summary.get("speaker"),
        modality=str(summary.get("modality") or ("text" if turn.events_of("user.text") else "voice")), user=user,
        heard=heard, input_verdict=input_verdict if isinstance(input_verdict, dict) else None,
        generated=generated, output_verdicts=verdicts, verdict_texts=texts,
        spoken=None if spoken is None else str(spoken), interrupted=interrupted,
        refused=bool(summary.get("refused")),
        user_audio=user.get("audio") if user and isinstance(user.get("audio"), dict) else None,
        bot_audio=summary.get("bot_audio") if isinstance(summary.get("bot_audio"), dict) else None,
        timings=dict(timings) if isinstance(timings, dict) else {}, errors=errors, summary=summary,
        events=list(turn.events))


def require_session(session_dir: str | Path) -> Path:
    """``session_dir`` as a Path if it holds an audit log; else one clear line."""
    root = Path(session_dir)
    if not (root / EVENTS_FILE).is_file():
        raise VoicebotError(f"no audit log at {root}: pass a session directory such as "
                            "audits/20261122T115000Z-3f9a1c (it holds events.jsonl)")
    return root


def read_session(session_dir: str | Path) -> Session:
    root = require_session(session_dir)
    events = root / EVENTS_FILE
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
