"""What each variant did, read back from its audit sessions, and how the variants compare.

Everything here is computed from the audit logs the variants wrote (through the same
:func:`bot.audit.read.turn_view` that ``audit show`` and the HTML report use), so a comparison can be
recomputed later from the logs alone and never disagrees with them.

Turns are aligned across variants by input and order: the n-th user turn a variant heard in an input
is compared with the n-th user turn every other variant heard in it (a variant that split the speech
differently shows up as extra or missing turns, and as low agreement).
"""

from __future__ import annotations

import math
import re
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.audit.read import TurnView, num, read_session
from bot.audit.verify import verify
from bot.compare.inputs import InputItem
from bot.compare.variants import Variant

Outcome = Literal["answered", "refused", "blocked", "silent", "error"]
"""answered: something was said and nothing was blocked; refused: input moderation stopped the turn;
blocked: output moderation stopped (part of) the reply; silent: nothing was said; error: the turn failed."""
Status = Literal["ok", "skipped", "failed"]


class Verdict(BaseModel):
    allowed: bool | None
    categories: list[str] = Field(default_factory=list)
    backend: str | None = None
    text: str | None = None


class TurnOutcome(BaseModel):
    input: str
    """The input item's name."""
    index: int
    """1-based order of this user turn within its input, for this variant (the alignment key)."""
    audit_turn: int
    heard: str | None
    generated: list[str]
    played: str | None
    input_verdict: Verdict | None
    output_verdicts: list[Verdict]
    refused: bool
    blocked: bool
    held_back: bool
    """Realtime: the model's audio for a failing chunk was held back (never played)."""
    leaked_ms: float | None
    """Audio released before a failing check came back (realtime; 0 in strict hold-back)."""
    interrupted: bool
    outcome: Outcome
    timings: dict[str, float] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    bot_audio: Path | None = None
    wer: float | None = None
    """Word error rate of what this variant heard against the input's reference, if one is given."""

    @property
    def v2v_ms(self) -> float | None:
        return self.timings.get("v2v_ms")


class SessionRef(BaseModel):
    input: str
    audit_dir: Path
    verified: bool
    head: str | None
    problems: list[str] = Field(default_factory=list)
    reply_wav: Path | None = None


class Aggregates(BaseModel):
    turns: int = 0
    answered: int = 0
    refused: int = 0
    blocked: int = 0
    held_back: int = 0
    silent: int = 0
    errors: int = 0
    v2v_p50_ms: float | None = None
    v2v_p95_ms: float | None = None
    leaked_ms: float = 0.0
    wer: float | None = None


class VariantResult(BaseModel):
    variant: Variant
    mode: str | None = None
    status: Status = "ok"
    reason: str | None = None
    """Why the variant was skipped or failed (one line)."""
    sessions: list[SessionRef] = Field(default_factory=list)
    turns: list[TurnOutcome] = Field(default_factory=list)
    aggregates: Aggregates = Field(default_factory=Aggregates)

    def turn(self, input_name: str, index: int) -> TurnOutcome | None:
        return next((t for t in self.turns if t.input == input_name and t.index == index), None)


class Agreement(BaseModel):
    a: str
    b: str
    turns: int
    """Aligned turns both variants have."""
    same_outcome: float | None
    """Share of aligned turns with the same outcome (answered/refused/blocked/silent/error)."""
    reply_similarity: float | None
    """Mean word-set overlap (Jaccard) of what the two played, over aligned turns where both spoke."""


def _verdict(v: Any, text: str | None = None) -> Verdict | None:
    if not isinstance(v, dict):
        return None
    cats = v.get("categories") or []
    return Verdict(allowed=v.get("allowed") if isinstance(v.get("allowed"), bool) else None,
                   categories=[str(c) for c in cats] if isinstance(cats, list) else [str(cats)],
                   backend=str(v["backend"]) if v.get("backend") else None, text=text)


def _outcome(view: TurnView) -> Outcome:
    if view.errors and not (view.spoken or "").strip():
        return "error"
    if view.input_blocked:
        return "refused"
    if view.output_blocked:
        return "blocked"  # a blocked reply may be followed by the spoken refusal line: still "blocked"
    if view.refused:
        return "refused"
    if not (view.spoken or "").strip():
        return "silent"
    return "answered"


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER on lower-cased words without punctuation (jiwer's edit distance)."""
    import jiwer  # noqa: PLC0415

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or ""))


def normalise(text: str | None) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", (text or "").lower().replace("’", "'")))


def outcomes_from_session(audit_dir: Path, input_name: str, reference: str | None = None) -> list[TurnOutcome]:
    """The user turns of one audit session as :class:`TurnOutcome` rows (greetings are left out)."""
    session = read_session(audit_dir)
    rows: list[TurnOutcome] = []
    for view in session.views():
        if view.bot_initiated:
            continue
        timings = {k: float(v) for k, v in view.timings.items() if num(v) is not None}
        rt = session.header.get("mode") == "realtime"
        rows.append(TurnOutcome(
            input=input_name, index=len(rows) + 1, audit_turn=view.number, heard=view.heard,
            generated=list(view.generated), played=view.spoken,
            input_verdict=_verdict(view.input_verdict),
            output_verdicts=[v for v in (_verdict(x, t) for x, t in zip(view.output_verdicts, view.verdict_texts))
                             if v is not None],
            refused=view.input_blocked or (view.refused and not view.output_blocked), blocked=view.output_blocked,
            held_back=rt and view.output_blocked, leaked_ms=timings.get("leaked_ms"),
            interrupted=view.interrupted, outcome=_outcome(view), timings=timings, errors=list(view.errors),
            bot_audio=session.audio_path(view.bot_audio),
        ))
    if reference is not None:
        heard = " ".join(r.heard or "" for r in rows)
        wer = word_error_rate(reference, heard)
        for r in rows:  # one reference per input: the WER of everything the variant heard in it
            r.wer = wer
    return rows


def session_ref(audit_dir: Path, input_name: str, reply_wav: Path | None = None) -> SessionRef:
    result = verify(audit_dir)
    return SessionRef(input=input_name, audit_dir=audit_dir, verified=result.ok, head=result.head,
                      problems=list(result.problems), reply_wav=reply_wav)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def aggregate(turns: list[TurnOutcome]) -> Aggregates:
    v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None and t.outcome == "answered"]
    wers = {t.input: t.wer for t in turns if t.wer is not None}
    return Aggregates(
        turns=len(turns),
        answered=sum(t.outcome == "answered" for t in turns),
        refused=sum(t.outcome == "refused" for t in turns),
        blocked=sum(t.blocked for t in turns),
        held_back=sum(t.held_back for t in turns),
        silent=sum(t.outcome == "silent" for t in turns),
        errors=sum(t.outcome == "error" for t in turns),
        v2v_p50_ms=percentile(v2v, 50), v2v_p95_ms=percentile(v2v, 95),
        leaked_ms=round(sum(t.leaked_ms or 0.0 for t in turns), 1),
        wer=round(sum(wers.values()) / len(wers), 3) if wers else None,
    )


def jaccard(a: str | None, b: str | None) -> float:
    wa, wb = set(normalise(a).split()), set(normalise(b).split())
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def agreements(results: list[VariantResult]) -> list[Agreement]:
    """Pairwise agreement of the variants that ran."""
    ran = [r for r in results if r.status == "ok"]
    out: list[Agreement] = []
    for a, b in combinations(ran, 2):
        keys = {(t.input, t.index) for t in a.turns} & {(t.input, t.index) for t in b.turns}
        pairs = [(a.turn(*k), b.turn(*k)) for k in sorted(keys)]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        spoke = [(x, y) for x, y in pairs if (x.played or "").strip() and (y.played or "").strip()]
        out.append(Agreement(
            a=a.variant.name, b=b.variant.name, turns=len(pairs),
            same_outcome=round(sum(x.outcome == y.outcome for x, y in pairs) / len(pairs), 3) if pairs else None,
            reply_similarity=round(sum(jaccard(x.played, y.played) for x, y in spoke) / len(spoke), 3)
            if spoke else None))
    return out


class Comparison(BaseModel):
    """The whole result of ``voicebot compare`` (``comparison.json``; schema ``comparison_version``)."""

    comparison_version: Literal["1"] = "1"
    created: str
    persona: str
    inputs: list[InputItem]
    variants: list[VariantResult]
    agreement: list[Agreement] = Field(default_factory=list)

    def keys(self) -> list[tuple[str, int]]:
        """Every (input, turn index) any variant has, in input order."""
        order = {item.name: i for i, item in enumerate(self.inputs)}
        found = {(t.input, t.index) for r in self.variants for t in r.turns}
        return sorted(found, key=lambda k: (order.get(k[0], len(order)), k[0], k[1]))
