"""A plain-text transcript of an audit session for reviewers (``voicebot audit show DIR``).

Per turn: what was heard, what the input moderator decided, what the LLM generated, what the output
moderator decided (blocked text marked), what was actually spoken (cut at barge-in), audio files and
timings. Above the turns: persona, mode, models, config hash and the chain status from ``verify``.
Record types this version does not know are listed generically, never dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.audit.read import (STAGED, Session, Turn, blocked, ms_text, num, read_session, turn_view,
                            verdict_summary)
from bot.audit.verify import verify
from bot.redact import redact_text

LABEL = 11  # width of the field labels
# The log stores keys sorted; show the usual ones in pipeline order, then the rest.
TIMING_ORDER = ("stt_ms", "moderation_input_ms", "llm_ttft_ms", "moderation_output_ms", "tts_ttfa_ms", "v2v_ms")
MODEL_ORDER = ("vad", "stt", "llm", "tts", "moderation")


def show(session_dir: str | Path, events: bool = False) -> str:
    """The transcript as text. ``events=True`` also lists every staged event with its time."""
    session = read_session(session_dir)
    result = verify(session_dir)
    out: list[str] = []
    _header(out, session, result)
    for turn in session.turns:
        out.append("")
        _turn(out, turn, events)
    shown = [r for r in session.other if events or r["type"] not in STAGED]
    if shown:
        out.append("")
        out.append("Session events")
        for rec in shown:
            out.append("  " + _generic(rec))
    return redact_text("\n".join(out) + "\n")


# --------------------------------------------------------------------------- header


def _header(out: list[str], s: Session, result: Any) -> None:
    h = s.header
    out.append(f"voicebot audit session {s.dir.name}")
    start = s.records[0] if s.records and s.records[0]["type"] == "session.start" else None
    if start:
        out.append(_field("started", str(start.get("time", "?"))))
    bits = []
    version = h.get("voicebot_version") or h.get("version")
    if version:
        bits.append(f"voicebot {version}")
    if h.get("mode"):
        bits.append(f"mode {h['mode']}")
    bits.append(f"schema {h.get('schema_version', '?')}")
    out.append(_field("run", " · ".join(bits)))
    persona = h.get("persona")
    if isinstance(persona, dict):
        sha = persona.get("sha256") or persona.get("hash") or ""
        out.append(_field("persona", f"{persona.get('name', '?')}" + (f" (sha256 {sha[:12]})" if sha else "")))
    elif persona:
        out.append(_field("persona", str(persona)))
    if h.get("config_hash"):
        out.append(_field("config", f"sha256 {str(h['config_hash'])[:12]}"))
    if h.get("replay_of"):
        out.append(_field("replay of", replay_origin(h)))
    models = h.get("models")
    if isinstance(models, dict) and models:
        named = (f"{k}: {_short(models[k])}" for k in _ordered(models, MODEL_ORDER))
        out.append(_field("models", " · ".join(named)))
    elif models:
        out.append(_field("models", _short(models)))
    out.append(_field("audio", "stored" if h.get("store_audio", True) else "not stored (store_audio = false)"))
    head = f"; head {result.head[:16]}" if result.ok and result.head else ""
    out.append(_field("chain", result.summary().removeprefix("chain ") + head))
    for extra in result.problems[1:5]:
        out.append(_field("", extra))
    for warning in result.warnings[(0 if not result.ok else 1):]:
        out.append(_field("warning", warning))
    if s.end is not None:
        out.append(_field("ended", f"{s.end.get('reason', '?')} · {s.end.get('turns', '?')} turns · "
                                   f"{s.end.get('errors', '?')} errors"))
    else:
        out.append(_field("ended", "NOT ENDED (the session was killed or crashed)"))
    if s.bad_lines:
        out.append(_field("unreadable", "lines " + ", ".join(map(str, s.bad_lines[:10]))))


def replay_origin(h: dict[str, Any]) -> str:
    """``replay of`` line for a session written by ``voicebot replay`` (header ``replay_of*`` keys)."""
    text = str(h.get("replay_of_dir") or h.get("replay_of"))
    if h.get("replay_of_head"):
        text += f" (head {str(h['replay_of_head'])[:16]})"
    if h.get("replay_of_verified") is False:
        text += " — the original FAILED verification (replayed with --force)"
    return text


# --------------------------------------------------------------------------- turns


def _turn(out: list[str], turn: Turn, events: bool) -> None:
    v = turn_view(turn)
    title = f"Turn {turn.number}"
    if v.complete:
        if v.speaker:
            title += f" · {v.speaker}"
        if v.user is not None:
            title += f" · {v.modality}"
        if v.start_s is not None and v.end_s is not None:
            title += f" · {v.start_s:.2f} s – {v.end_s:.2f} s"
        elif v.user is None:
            title += " · bot-initiated"
    else:
        title += " · INCOMPLETE (no turn record: the session stopped during this turn)"
    out.append(title)

    # heard + input verdict
    if v.heard is not None or v.user is not None or not v.complete:
        out.append(_field("typed" if v.modality == "text" else "heard", _quote(v.heard) + ("   [BLOCKED by input moderation]" if v.input_blocked else "")))
        out.append(_field("input", _verdict(v.input_verdict)))

    # generated + output verdicts
    blocked_texts = v.blocked_texts
    lines = [f"{i}. {_quote(g)}" + ("   [BLOCKED]" if g in blocked_texts else "")
             for i, g in enumerate(v.generated, 1)]
    _multi(out, "generated", lines or ["(nothing)"])
    verdicts = v.output_verdicts
    if verdicts and all(isinstance(x, dict) and x.get("allowed") is True for x in verdicts):
        backends = sorted({str(x.get("backend")) for x in verdicts if x.get("backend")})
        checks = f"{len(verdicts)} check" + ("s" if len(verdicts) > 1 else "")
        vlines = [f"allowed ({checks}" + (f", backend={','.join(backends)}" if backends else "") + ")"]
    else:
        vlines = [f"{i}. " + _verdict(x) + (f"   on {_quote(text)}" if text and _blocked(x) else "")
                  for i, (text, x) in enumerate(zip(v.verdict_texts, verdicts), 1)]
    _multi(out, "output", vlines or ["not checked"])

    # spoken
    text = _quote(v.spoken) if v.spoken is not None else "(unknown: the turn did not finish)"
    out.append(_field("posted" if v.modality == "text" else "spoken",
                      text + ("   [cut at barge-in]" if v.interrupted else "")))
    if v.refused:
        out.append(_field("refused", "yes: the persona's refusal was spoken instead"))

    # audio, timings, errors
    audio = []
    if v.user_audio:
        audio.append("user " + _audio(v.user_audio))
    if v.bot_audio:
        audio.append("bot " + _audio(v.bot_audio))
    if audio:
        out.append(_field("audio", " · ".join(audio)))
    if v.timings:
        out.append(_field("timings", " · ".join(_timing(k, v.timings[k]) for k in _ordered(v.timings, TIMING_ORDER))))
    if v.errors:
        _multi(out, "errors", v.errors)
    listed = v.events if events else v.extra_events
    if listed:
        _multi(out, "events", [_generic(r) for r in listed])


# --------------------------------------------------------------------------- formatting


def _ordered(mapping: dict[str, Any], first: tuple[str, ...]) -> list[str]:
    return [k for k in first if k in mapping] + [k for k in mapping if k not in first]


_ms = ms_text


def _field(label: str, text: str) -> str:
    return f"  {label:<{LABEL}}{text}"


def _multi(out: list[str], label: str, lines: list[str]) -> None:
    out.append(_field(label, lines[0]))
    for line in lines[1:]:
        out.append(_field("", line))


def _quote(text: Any) -> str:
    return "(none)" if text is None else json.dumps(str(text), ensure_ascii=False)


_num = num
_blocked = blocked


def _verdict(v: Any) -> str:
    if not isinstance(v, dict):
        return "not checked"
    head, parts = verdict_summary(v, _short)
    return head + (f" ({', '.join(parts)})" if parts else "")


def _audio(ref: dict[str, Any]) -> str:
    dur = _num(ref.get("duration_s"))
    return f"{ref.get('file', '?')}" + (f" ({dur:.2f} s)" if dur is not None else "")


def _timing(key: str, value: Any) -> str:
    if key.endswith("_ms") and _num(value) is not None:
        return f"{key[:-3]} {_ms(value)}"
    return f"{key} {value}"


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _generic(rec: dict[str, Any]) -> str:
    t = _num(rec.get("t"))
    when = f"+{t:.3f}s" if t is not None else "+?"
    return f"{when}  {rec.get('type')}  {_short(rec.get('data'))}"
