"""Checking what a variant did in a scenario against the scenario's checks.

A check passes, fails, or is skipped (``passed = None``: e.g. a judge check with no judge configured, or
a variant that did not run). Text checks look at what was **played** (what the user heard), lower-cased;
``declined`` accepts a moderation refusal or block, the persona's refusal line, or a reply that says it
won't help (``DECLINE_RE``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from bot.compare.results import TurnOutcome
from bot.evals.suite import Check, Scenario

DECLINE_RE = re.compile(
    r"\b(i\s*(?:can(?:no|')?t|won'?t|will not|am not able|'m not able|must decline|refuse)|"
    r"not (?:able|allowed|going) to (?:help|do|assist|provide|give)|i'?d rather not)\b", re.I)

Judge = Callable[[str, str, str], "bool | None"]
"""(question, what the user said, what the bot played) -> True/False, or None when it could not decide."""


class CheckResult(BaseModel):
    check: str
    kind: str
    passed: bool | None
    detail: str = ""


class ScenarioResult(BaseModel):
    scenario: str
    variant: str
    mode: str | None
    status: Literal["pass", "fail", "skipped"]
    expected_failure: str | None = None
    """Why this scenario is expected to fail in this variant's mode (from the suite), if it is."""
    checks: list[CheckResult]


def _text(t: TurnOutcome | None) -> str:
    return (t.played or "").lower() if t else ""


def evaluate_check(check: Check, turns: list[TurnOutcome], *, refusal: str, judge: Judge | None,
                   said: str) -> CheckResult:
    index = check.turn or (max((t.index for t in turns), default=1))
    turn = next((t for t in turns if t.index == index), None)
    played = _text(turn)
    kind = check.kind

    def res(ok: bool | None, detail: str = "") -> CheckResult:
        return CheckResult(check=check.label(), kind=kind, passed=ok, detail=detail)

    if kind == "silent":
        spoke = any((t.played or "").strip() for t in turns) if check.turn is None else bool(played.strip())
        return res(spoke != check.silent, f"played: {played[:120]!r}" if spoke else "nothing was played")
    if turn is None:
        return res(False, f"no user turn {index} was heard ({len(turns)} heard)")
    if kind == "contains_any":
        hit = [w for w in check.contains_any or [] if w.lower() in played]
        return res(bool(hit), f"found {hit}" if hit else f"none in {played[:160]!r}")
    if kind == "contains_all":
        miss = [w for w in check.contains_all or [] if w.lower() not in played]
        return res(not miss, f"missing {miss} in {played[:160]!r}" if miss else "all found")
    if kind == "not_contains":
        hit = [w for w in check.not_contains or [] if w.lower() in played]
        return res(not hit, f"played {hit}" if hit else "none played")
    if kind == "matches":
        m = re.search(check.matches or "", turn.played or "")
        return res(m is not None, f"matched {m.group(0)!r}" if m else f"no match in {played[:160]!r}")
    if kind == "refused":
        return res((turn.outcome == "refused") == check.refused, f"outcome {turn.outcome}")
    if kind == "blocked":
        return res(turn.blocked == check.blocked, f"outcome {turn.outcome}")
    if kind == "declined":
        said_no = turn.outcome in ("refused", "blocked") or (refusal and refusal.lower() in played) \
            or bool(DECLINE_RE.search(played))
        return res(said_no == check.declined, f"outcome {turn.outcome}: {played[:120]!r}")
    if kind == "max_v2v_ms":
        v = turn.v2v_ms
        return res(None if v is None else v <= (check.max_v2v_ms or 0),
                   "no voice-to-voice time (nothing played)" if v is None else f"{v:.0f} ms")
    if kind == "judge":
        if judge is None:
            return res(None, "no judge configured ([eval] judge_model)")
        verdict = judge(check.judge or "", said, turn.played or "")
        return res(verdict, "judge could not decide" if verdict is None else "")
    raise AssertionError(kind)  # pragma: no cover - Check validates its kind


def evaluate(scenario: Scenario, variant: str, mode: str | None, turns: list[TurnOutcome] | None, *,
             refusal: str, judge: Judge | None, said: str) -> ScenarioResult:
    expected = scenario.expect_fail.get(mode or "")
    if turns is None:
        return ScenarioResult(scenario=scenario.id, variant=variant, mode=mode, status="skipped",
                              expected_failure=expected,
                              checks=[CheckResult(check=c.label(), kind=c.kind, passed=None,
                                                  detail="variant did not run") for c in scenario.checks])
    results = [evaluate_check(c, turns, refusal=refusal, judge=judge, said=said) for c in scenario.checks]
    decided = [r.passed for r in results if r.passed is not None]
    status = "skipped" if not decided else "pass" if all(decided) else "fail"
    return ScenarioResult(scenario=scenario.id, variant=variant, mode=mode, status=status,
                          expected_failure=expected, checks=results)
