"""``voicebot eval SUITE``: build each scenario's audio, run it through every variant like ``compare`` does,
check the outcomes, and report pass rates per variant (the same report, with a checks section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from bot.compare.inputs import InputItem
from bot.compare.runner import BaseConfig, Progress, run_comparison, variant_settings
from bot.compare.results import Comparison
from bot.compare.variants import Variant
from bot.evals.checks import ScenarioResult, evaluate
from bot.evals.judge import check_judge, make_judge
from bot.evals.suite import Suite
from bot.evals.synth import build_scenario_audio


class PassRate(BaseModel):
    variant: str
    mode: str | None
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    expected_failures: int = 0
    """Failed scenarios the suite says this mode is expected to fail (counted in ``failed`` too)."""

    @property
    def rate(self) -> float | None:
        decided = self.passed + self.failed
        return self.passed / decided if decided else None


class Evaluation(BaseModel):
    suite: str
    about: str = ""
    comparison: Comparison
    results: list[ScenarioResult] = Field(default_factory=list)
    pass_rates: list[PassRate] = Field(default_factory=list)

    def result(self, scenario: str, variant: str) -> ScenarioResult | None:
        return next((r for r in self.results if r.scenario == scenario and r.variant == variant), None)


def build_inputs(suite: Suite, audio_dir: Path, progress: Progress) -> list[InputItem]:
    base = suite.source.parent if suite.source else Path.cwd()
    items = []
    for n, sc in enumerate(suite.scenarios):
        progress(f"eval: synthesizing {sc.id}")
        path, said = build_scenario_audio(sc, audio_dir / f"{sc.id}.wav", suite_dir=base, seed=n)
        items.append(InputItem(name=sc.id, kind="audio", path=path, reference=said or None))
    return items


async def run_eval(suite: Suite, variants: list[Variant], base: BaseConfig, out_dir: Path,
                   progress: Progress = lambda _: None) -> Evaluation:
    from bot.persona import load_persona  # noqa: PLC0415

    if base.persona is None and suite.persona:
        base = base.model_copy(update={"persona": suite.persona})
    settings = variant_settings(variants[0], base, out_dir / "audit")  # the judge config is shared
    check_judge(settings.eval)
    judge = make_judge(settings.eval)
    items = build_inputs(suite, out_dir / "audio", progress)
    comparison = await run_comparison(variants, items, base, out_dir, progress)
    results: list[ScenarioResult] = []
    rates: list[PassRate] = []
    for vr in comparison.variants:
        refusal = ""
        if vr.status == "ok":
            refusal = load_persona(variant_settings(vr.variant, base, out_dir / "audit").persona).refusal
        rate = PassRate(variant=vr.variant.name, mode=vr.mode)
        for sc, item in zip(suite.scenarios, items):
            turns = [t for t in vr.turns if t.input == sc.id] if vr.status == "ok" else None
            res = evaluate(sc, vr.variant.name, vr.mode, turns, refusal=refusal, judge=judge,
                           said=item.reference or "")
            results.append(res)
            rate.passed += res.status == "pass"
            rate.failed += res.status == "fail"
            rate.skipped += res.status == "skipped"
            rate.expected_failures += res.status == "fail" and res.expected_failure is not None
        rates.append(rate)
    return Evaluation(suite=suite.name, about=suite.about, comparison=comparison, results=results,
                      pass_rates=rates)


def eval_table(ev: Evaluation) -> str:
    """Scenario x variant pass/fail, then the pass rate per variant."""
    names = [r.variant for r in ev.pass_rates]
    ids = list(dict.fromkeys(r.scenario for r in ev.results))
    w = max([len("scenario"), *map(len, ids)])
    cols = [max(len(n), 6) for n in names]
    out = ["scenario".ljust(w) + "  " + "  ".join(n.ljust(c) for n, c in zip(names, cols))]
    for sid in ids:
        cells = []
        for n, c in zip(names, cols):
            r = ev.result(sid, n)
            mark = "-" if r is None else r.status + ("*" if r.status == "fail" and r.expected_failure else "")
            cells.append(mark.ljust(c))
        out.append(sid.ljust(w) + "  " + "  ".join(cells))
    out.append("")
    for r in ev.pass_rates:
        rate = "-" if r.rate is None else f"{r.rate:.0%}"
        out.append(f"{r.variant}: {r.passed} passed, {r.failed} failed ({r.expected_failures} expected), "
                   f"{r.skipped} skipped -> pass rate {rate}")
    if any(r.expected_failure for r in ev.results if r.status == "fail"):
        out.append("* expected to fail in this mode (see the suite's expect_fail)")
    return "\n".join(out) + "\n"
