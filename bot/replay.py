"""Replay a recorded session through another configuration (``voicebot replay DIR``).

The original session is verified first (a log that fails verification is refused unless ``force``).
The user audio of each of its turns (``audio/turn-NNNN-user.flac``) is then fed, in order, to ONE
new session on the file transport, so the new bot keeps the conversation's context just like the
original did. Turns are not placed on a fixed timeline: the next turn's audio starts only once the
new bot has finished answering the previous one (plus a short pause), because a new persona or model
may answer at a very different length and a fixed gap would make the user "barge in" on long answers.
The exception is an original turn that was cut at barge-in: then the next turn starts at its original
offset, so the new bot gets interrupted too (if it is still talking by then).

The new session writes its own audit log; its header has ``replay_of`` (the original session id),
``replay_of_dir``, ``replay_of_head`` (the original's head hash) and ``replay_of_verified``, and a
``replay.input`` record marks where each original turn's audio starts on the new session's clock.
:func:`diff_sessions` compares two logs turn by turn (transcript, spoken reply, moderation verdicts,
latencies); it only reads logs, so it can be rerun later on any original/replay pair.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.audit.read import Session, TurnView, blocked, num, read_session
from bot.audit.verify import verify
from bot.errors import VoicebotError

if TYPE_CHECKING:  # the pipeline stack is imported only when a replay actually runs
    from bot.config import Settings
    from bot.persona import Persona

LEAD_SECS = 0.5
"""Silence before the first turn's audio."""
MIN_GAP_SECS = 1.0
"""Silence after a turn's audio before the next one may start, whatever the bot does."""
SETTLE_SECS = 1.0
"""The bot must have been quiet (no speech, no model, no playback) this long before the next turn starts."""
NO_TURN_SECS = 6.0
"""If a turn's audio produced no answered turn (nothing recognised), move on after this much quiet."""
GREETING_WAIT_SECS = 15.0
"""With ``greet`` on, the first turn waits for the greeting to be spoken (at most this long)."""
START_TOLERANCE_SECS = 0.3
"""A replay turn belongs to the replayed audio that started at most this long after its speech start."""
TIMING_KEYS = ("v2v_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms")


# --------------------------------------------------------------------------- input: the original turns


@dataclass
class Segment:
    """One original turn's user audio, to be fed to the new session."""

    original_turn: int
    samples: np.ndarray
    """float32 mono at the pipeline's input rate."""
    audio_file: str
    audio_sha256: str
    clip_start: float | None
    """Where the clip started on the original session's clock (``user.start_s`` - padding, if known)."""
    interrupted: bool = False
    """The original bot answer to this turn was cut at barge-in by the next turn."""
    onset_to_next: float | None = None
    """Original seconds from this clip's start to the next clip's start (used to reproduce a barge-in)."""


@dataclass
class Source:
    """A verified original session and what can be replayed from it."""

    session: Session
    verified: bool
    head: str | None
    problems: list[str]
    segments: list[Segment]
    skipped: list[tuple[int, str]]
    """(original turn, why it is not replayed)."""


def load_source(original_dir: str | Path, sample_rate: int, *, force: bool = False) -> Source:
    """Verify the original session and load its user audio, turn by turn.

    Raises :class:`VoicebotError` when the log fails verification (unless ``force``), when it holds
    no user audio (``audit.store_audio = false``), or when no turn can be replayed.
    """
    import soundfile as sf  # noqa: PLC0415

    from bot.audio import as_mono_float  # noqa: PLC0415

    root = Path(original_dir)
    result = verify(root)
    session = read_session(root)  # raises a clear error when root holds no events.jsonl
    if not result.ok and not force:
        raise VoicebotError(f"{root.name} fails verification ({result.problems[0]}): refusing to replay a "
                            "tampered or damaged audit log (check it with `voicebot audit verify`; "
                            "--force replays it anyway)")
    if session.header.get("store_audio") is False:
        raise VoicebotError(f"{root.name} has no user audio to replay: it was recorded with "
                            "audit.store_audio = false")
    views = session.views()
    forgotten = session.forgotten_audio()
    segments: list[Segment] = []
    skipped: list[tuple[int, str]] = []
    for view in views:
        if view.bot_initiated:
            continue  # a greeting: nothing of the user's to feed
        if not view.complete:
            skipped.append((view.number, "incomplete turn (the session stopped during it): no audio was stored"))
            continue
        ref = view.user_audio
        if ref is None:
            skipped.append((view.number, "no user audio stored for this turn"))
            continue
        if ref.get("file") in forgotten and not (session.audio_path(ref) or root).is_file():
            skipped.append((view.number, "user audio deleted on request (privacy.forget)"))
            continue
        path = session.audio_path(ref)
        try:
            if path is None or not path.resolve().is_relative_to(root.resolve()):
                raise OSError("outside the session folder")
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            skipped.append((view.number, f"user audio {ref.get('file')} unreadable: {exc}"))
            continue
        clip_start = None
        if view.start_s is not None:
            from bot.audit_sink import PAD_SECS  # noqa: PLC0415

            clip_start = max(0.0, view.start_s - PAD_SECS)
        segments.append(Segment(view.number, as_mono_float(audio, rate, sample_rate), str(ref.get("file")),
                                str(ref.get("sha256")), clip_start, interrupted=view.interrupted))
    for seg, nxt in zip(segments, segments[1:]):
        if seg.clip_start is not None and nxt.clip_start is not None:
            seg.onset_to_next = max(0.0, nxt.clip_start - seg.clip_start)
    if not segments:
        if any(v.complete and not v.bot_initiated for v in views):
            raise VoicebotError(f"{root.name} has no user audio to replay: its turns have no audio files "
                                "(recorded with audit.store_audio = false, or the audio could not be stored)")
        raise VoicebotError(f"{root.name} has no finished user turn to replay")
    return Source(session, result.ok, result.head, list(result.problems), segments, skipped)


# --------------------------------------------------------------------------- the transport


def _make_transport(segments: list[Segment], *, in_rate: int, out_rate: int, max_wait: float,
                    greeting: bool = False):
    """A :class:`~bot.transports.file.FileTransport` whose input plays the segments turn by turn."""
    from pipecat.frames.frames import InputAudioRawFrame  # noqa: PLC0415

    from bot.audio import to_pcm  # noqa: PLC0415
    from bot.transports.file import (  # noqa: PLC0415
        BLOCK_SECS,
        FileInputTransport,
        FileTransport,
    )

    class ReplayInputTransport(FileInputTransport):
        """Feeds each segment at real-time pace, then silence until the bot has answered it."""

        drop_source = "replay"
        skipping_drops_audio = False  # it feeds from its own position: a skip delays the audio, loses none

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tracker: Any = None
            self.on_segment: Any = None
            self.segment_starts: list[float] = []
            self.turns_done = 0
            self._turns_at_end = 0
            self._ended_at = 0.0
            self._seg, self._pos = -1, 0  # the segment being fed and the position in it
            self._buf: np.ndarray | None = None

        def note_turn(self, _turn: Any) -> None:
            self.turns_done += 1

        def _idle_for(self) -> float | None:
            """Seconds the bot has been idle (None while a turn is in flight)."""
            tr = self.tracker
            if tr is None:
                return float("inf")
            cur = tr.current
            pending = cur is not None and bool(cur.transcript) and cur.t_bot_stop is None and not cur.errors
            if tr.busy or pending:
                return None
            return time.monotonic() - tr.last_activity

        def _ready(self, nxt: int, now: float) -> bool:
            if nxt == 0:  # let a greeting be said first, as the original user presumably did
                idle = self._idle_for()
                if now < LEAD_SECS or idle is None or idle < 0.5:
                    return now >= max_wait
                started = self.tracker is None or self.tracker.last_activity > 0
                return not greeting or started or now >= GREETING_WAIT_SECS
            prev = segments[nxt - 1]
            if prev.interrupted and prev.onset_to_next is not None and nxt < len(segments):
                return now >= self.segment_starts[nxt - 1] + prev.onset_to_next
            since = now - self._ended_at
            if since >= max_wait:
                return True
            if since < MIN_GAP_SECS:
                return False
            idle = self._idle_for()
            if idle is None or idle < SETTLE_SECS:
                return False
            return self.turns_done > self._turns_at_end or since >= NO_TURN_SECS

        async def tick(self, i: int, block: int, silence: bytes) -> None:
            now = i * BLOCK_SECS
            if self._buf is None and not self.input_done.is_set() and self._ready(self._seg + 1, now):
                self._seg += 1
                if self._seg == len(segments):  # the last answer is in: the input ends here
                    self.input_secs = now
                    self.input_done.set()
                else:
                    self._buf, self._pos = segments[self._seg].samples, 0
                    self.segment_starts.append(now)
                    if self.on_segment is not None:
                        self.on_segment(self._seg, now)
            if self._buf is not None:
                chunk = self._buf[self._pos:self._pos + block]
                self._pos += block
                pcm = to_pcm(np.pad(chunk, (0, block - len(chunk))))
                if self._pos >= len(self._buf):
                    self._buf = None
                    self._ended_at = now + len(chunk) / self.sample_rate
                    self._turns_at_end = self.turns_done
            else:
                pcm = silence
            await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1))

    class ReplayTransport(FileTransport):
        def __init__(self) -> None:
            super().__init__(np.zeros(1, dtype=np.float32), in_rate=in_rate, out_rate=out_rate)
            self._input = ReplayInputTransport(np.zeros(1, dtype=np.float32), self.clock, self._params,
                                               name="replay-input")

    return ReplayTransport()


# --------------------------------------------------------------------------- running a replay


@dataclass
class ReplayResult:
    original_dir: Path
    replay_dir: Path | None
    errors: list[str] = field(default_factory=list)
    diff: dict[str, Any] = field(default_factory=dict)


async def replay(settings: Settings, persona: Persona, original_dir: str | Path, *,
                 force: bool = False, reply_path: str | Path | None = None,
                 on_session: Any = None) -> ReplayResult:
    """Feed ``original_dir``'s user audio through ``settings``/``persona``; return the new log and the diff.

    ``reply_path``: also write the new bot's speech as one WAV on the new session's timeline.
    ``on_session(session)`` is called before the session runs (e.g. to print turns as they finish).
    """
    from bot.session import Session as BotSession  # noqa: PLC0415
    from bot.session import until_file_done  # noqa: PLC0415

    if not settings.audit.enabled:
        raise VoicebotError("replay writes a new audit log: set audit.enabled = true (or drop "
                            "--set audit.enabled=false)")
    source = load_source(original_dir, settings.transport.sample_rate, force=force)
    segments = source.segments
    transport = _make_transport(segments, in_rate=settings.transport.sample_rate,
                                out_rate=settings.transport.output_sample_rate,
                                max_wait=settings.transport.max_reply_secs,
                                greeting=bool(settings.greet and persona.greeting))
    feeder = transport.input()
    session = BotSession(settings, persona, transport)
    feeder.tracker = session.tracker
    session.tracker.turn_listeners.append(feeder.note_turn)
    h = source.session.header
    session.open_audit(replay_of=h.get("session_id") or source.session.dir.name,
                       replay_of_dir=source.session.dir.name, replay_of_head=source.head,
                       replay_of_verified=source.verified)
    writer = session.audit
    if writer is not None:
        if source.skipped:
            writer.record("replay.skipped", {"turns": [{"original_turn": n, "reason": why}
                                                       for n, why in source.skipped]})

        def mark(index: int, t: float) -> None:
            seg = segments[index]
            writer.record("replay.input", {"original_turn": seg.original_turn, "t": round(t, 3),
                                           "duration_s": round(len(seg.samples) / settings.transport.sample_rate, 3),
                                           # not an audio reference (those point into this session):
                                           "original_session": source.session.dir.name,
                                           "original_audio": seg.audio_file,
                                           "original_audio_sha256": seg.audio_sha256})

        feeder.on_segment = mark
    if on_session is not None:
        on_session(session)
    try:
        result = await session.run(until_file_done(feeder.input_done, settings.transport.max_reply_secs))
    finally:
        if reply_path is not None:
            transport.write_reply(reply_path)
    out = ReplayResult(original_dir=Path(original_dir), replay_dir=result.audit_dir, errors=list(result.errors))
    if result.audit_dir is not None:
        out.diff = diff_sessions(original_dir, result.audit_dir)
    return out


# --------------------------------------------------------------------------- diffing two logs


def _verdict_brief(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, dict):
        return None
    cats = v.get("categories")
    return {"allowed": v.get("allowed"), "categories": sorted(map(str, cats)) if isinstance(cats, list) else []}


def _output_brief(verdicts: list[Any], texts: list[str | None]) -> dict[str, Any] | None:
    checked = [v for v in verdicts if isinstance(v, dict)]
    if not checked:
        return None
    cats = sorted({str(c) for v in checked for c in (v.get("categories") or []) if isinstance(v.get("categories"), list)})
    return {"allowed": all(v.get("allowed") is not False for v in checked), "categories": cats,
            "blocked": [t for t, v in zip(texts, verdicts) if blocked(v) and t]}


def _turn_start(view: TurnView) -> float | None:
    if view.start_s is not None:
        return view.start_s
    starts = [num(r["data"].get("t")) for r in view.events if r.get("type") == "user.started_speaking"]
    starts = [s for s in starts if s is not None]
    return starts[0] if starts else None


def _side(views: list[TurnView]) -> dict[str, Any]:
    """One original turn, or the replay turns its audio produced (usually one), as comparable values."""
    if not views:
        return {"turns": [], "transcript": None, "spoken": None, "input_verdict": None, "output_verdict": None,
                "refused": None, "interrupted": None, "timings": {}, "errors": []}
    last = views[-1]
    heard = " ".join(v.heard.strip() for v in views if v.heard and v.heard.strip())
    spoken = [v.spoken for v in views if v.spoken is not None]
    inputs = [b for v in views if (b := _verdict_brief(v.input_verdict)) is not None]
    input_brief = None
    if inputs:
        input_brief = {"allowed": all(b["allowed"] is not False for b in inputs),
                       "categories": sorted({c for b in inputs for c in b["categories"]})}
    out_verdicts = [x for v in views for x in v.output_verdicts]
    out_texts = [x for v in views for x in v.verdict_texts]
    return {
        "turns": [v.number for v in views],
        "transcript": heard,
        "spoken": " ".join(s.strip() for s in spoken if s.strip()) if spoken else None,
        "input_verdict": input_brief,
        "output_verdict": _output_brief(out_verdicts, out_texts),
        "refused": any(v.refused for v in views),
        "interrupted": any(v.interrupted for v in views),
        "timings": {k: num(last.timings.get(k)) for k in TIMING_KEYS},
        "errors": [e for v in views for e in v.errors],
        "complete": all(v.complete for v in views),
    }


def _norm(text: Any) -> str:
    return " ".join(str(text or "").split())


def _words(text: Any) -> list[str]:
    """Transcripts are compared by words: whisper's case and punctuation vary between runs."""
    return re.findall(r"[\w']+", str(text or "").lower())


def diff_sessions(original_dir: str | Path, replay_dir: str | Path) -> dict[str, Any]:
    """Compare a replay's log with its original's, turn by turn. Plain data (JSON-ready).

    Replay turns are matched to the original turn whose audio was being fed when their speech
    started (from the replay's ``replay.input`` records; in order when those are missing).
    """
    orig, rep = read_session(original_dir), read_session(replay_dir)
    o_check, r_check = verify(original_dir), verify(replay_dir)
    o_views = {v.number: v for v in orig.views()}
    r_views = [v for v in rep.views() if not v.bot_initiated]
    inputs = [r["data"] for r in rep.other if r.get("type") == "replay.input"]
    groups: dict[int, list[TurnView]] = {}
    unmatched: list[int] = []
    if inputs:
        starts = [(num(d.get("t")) or 0.0, d.get("original_turn")) for d in inputs]
        for v in r_views:
            t = _turn_start(v)
            owner = None
            for start, n in starts:
                if t is not None and start - START_TOLERANCE_SECS <= t:
                    owner = n
            if owner is None:
                unmatched.append(v.number)
            else:
                groups.setdefault(owner, []).append(v)
        order = [d.get("original_turn") for d in inputs]
    else:
        order = [n for n, v in o_views.items() if not v.bot_initiated and v.complete]
        for n, v in zip(order, r_views):
            groups[n] = [v]
        unmatched = [v.number for v in r_views[len(order):]]
    skipped = [t for r in rep.other if r.get("type") == "replay.skipped" for t in r["data"].get("turns", [])]

    turns = []
    for n in order:
        o = _side([o_views[n]] if n in o_views else [])
        r = _side(groups.get(n, []))
        changes = []
        if _words(o["transcript"]) != _words(r["transcript"]) or (o["transcript"] is None) != (r["transcript"] is None):
            changes.append("transcript")
        if _norm(o["spoken"]) != _norm(r["spoken"]):
            changes.append("reply")
        for key in ("input_verdict", "output_verdict", "refused", "interrupted"):
            a, b = o[key], r[key]
            if key == "output_verdict":
                a = a and {k: a[k] for k in ("allowed", "categories")}
                b = b and {k: b[k] for k in ("allowed", "categories")}
            if a != b:
                changes.append(key.replace("_", " "))
        timings = {}
        for k in TIMING_KEYS:
            a, b = o["timings"].get(k), r["timings"].get(k)
            timings[k] = {"original": a, "replay": b,
                          "delta": round(b - a, 1) if a is not None and b is not None else None}
        turns.append({"original_turn": n, "replay_turns": r["turns"], "changed": changes,
                      "original": {k: o[k] for k in o if k != "timings"},
                      "replay": {k: r[k] for k in r if k != "timings"}, "timings": timings})

    def meta(s: Session, check: Any) -> dict[str, Any]:
        h = s.header
        persona = h.get("persona") if isinstance(h.get("persona"), dict) else {"name": h.get("persona")}
        models = h.get("models") if isinstance(h.get("models"), dict) else {}
        return {"dir": str(s.dir), "session_id": h.get("session_id"), "persona": persona.get("name"),
                "mode": h.get("mode"), "config_hash": h.get("config_hash"), "llm": models.get("llm"),
                "verified": check.ok, "chain": check.summary(), "ended": s.end is not None}

    return {
        "original": meta(orig, o_check),
        "replay": {**meta(rep, r_check), "replay_of": rep.header.get("replay_of")},
        "turns": turns,
        "skipped": skipped,
        "unmatched_replay_turns": unmatched,
        "changed_turns": sum(bool(t["changed"]) for t in turns),
    }


# --------------------------------------------------------------------------- text


def format_diff(diff: dict[str, Any]) -> str:
    """The diff for a terminal: ``=`` unchanged, ``-`` original, ``+`` replay."""
    o, r = diff["original"], diff["replay"]
    out = [f"replay of {Path(o['dir']).name} -> {Path(r['dir']).name}"]
    for label, m in (("original", o), ("replay", r)):
        chain = "chain OK" if m["verified"] else "chain BROKEN"
        out.append(f"  {label:<9} persona {m['persona']} · mode {m['mode']} · config {str(m['config_hash'])[:12]}"
                   f" · llm {m['llm']} · {chain}")
    out.append(f"  {'turns':<9} {len(diff['turns'])} replayed · {diff['changed_turns']} changed"
               + (f" · {len(diff['skipped'])} not replayed" if diff["skipped"] else ""))
    for t in diff["turns"]:
        out.append("")
        rt = t["replay_turns"]
        target = ("no replay turn (nothing recognised)" if not rt else
                  f"replay turn {rt[0]}" if len(rt) == 1 else "replay turns " + ", ".join(map(str, rt)))
        out.append(f"Turn {t['original_turn']} -> {target}" + ("" if t["changed"] else "   (unchanged)"))
        a, b = t["original"], t["replay"]
        if "transcript" not in t["changed"] and _norm(a["transcript"]) != _norm(b["transcript"]):
            out.append(f"  {'transcript':<11}~ {_q(a['transcript'])}   (same words; replay heard {_q(b['transcript'])})")
        else:
            _pair(out, "transcript", _q(a["transcript"]), _q(b["transcript"]), "transcript" not in t["changed"])
        _pair(out, "reply", _q(a["spoken"]), _q(b["spoken"]), "reply" not in t["changed"])
        _pair(out, "input", _v(a["input_verdict"]), _v(b["input_verdict"]), "input verdict" not in t["changed"])
        _pair(out, "output", _v(a["output_verdict"]), _v(b["output_verdict"]), "output verdict" not in t["changed"])
        for key in ("refused", "interrupted"):
            if key in t["changed"]:
                _pair(out, key, _yn(a[key]), _yn(b[key]), False)
        lat = []
        for k, x in t["timings"].items():
            if x["original"] is None and x["replay"] is None:
                continue
            d = f" ({_signed_ms(x['delta'])})" if x["delta"] is not None else ""
            lat.append(f"{k[:-3]} {_ms(x['original'])} -> {_ms(x['replay'])}{d}")
        if lat:
            out.append(f"  {'latency':<11}" + " · ".join(lat))
        errors = b.get("errors") or []
        for e in errors:
            out.append(f"  {'error':<11}{e}")
    for s in diff["skipped"]:
        out.append("")
        out.append(f"Turn {s.get('original_turn')} not replayed: {s.get('reason')}")
    if diff["unmatched_replay_turns"]:
        out.append("")
        out.append("replay turns matching no original turn: " + ", ".join(map(str, diff["unmatched_replay_turns"])))
    return "\n".join(out) + "\n"


def _pair(out: list[str], label: str, a: str, b: str, same: bool) -> None:
    if same:
        out.append(f"  {label:<11}= {a}")
    else:
        out.append(f"  {label:<11}- {a}")
        out.append(f"  {'':<11}+ {b}")


def _q(text: Any) -> str:
    return "(none)" if text is None else json.dumps(str(text), ensure_ascii=False)


def _v(brief: dict[str, Any] | None) -> str:
    if brief is None:
        return "not checked"
    head = "allowed" if brief.get("allowed") else "BLOCKED"
    cats = brief.get("categories") or []
    text = head + (f" ({','.join(cats)})" if cats else "")
    if brief.get("blocked"):
        text += " on " + "; ".join(_q(x) for x in brief["blocked"])
    return text


def _yn(value: Any) -> str:
    return "yes" if value else "no"


def _signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "-") + _ms(abs(value))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"
