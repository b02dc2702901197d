"""Measure moderation stacks on the labelled sets: per functionality, per category, cost per sentence.

    python benchmarks/moderation.py                      # holdout + dev tables for the default stack
    python benchmarks/moderation.py --stacks all         # also the older stacks, one summary each
    python benchmarks/moderation.py --set holdout --misses
    python benchmarks/moderation.py --json

Sets (``tests/data``, format in :mod:`moderation.cases`):

* ``holdout`` - ``moderation_holdout.tsv``: written and committed before the classifier was trained,
  never trained or tuned on. **The honest numbers.**
* ``holdout2`` - ``moderation_holdout2.tsv``: a second, larger holdout (more identity groups, spoken
  barge-ins, programming and idiom look-alikes) written and committed before the second round of changes
  to the classifier; never trained or tuned on either.
* ``dev`` - ``moderation_dev.tsv``: used to choose C and the toxicity threshold (optimistic).
* ``redteam-dev`` / ``redteam-holdout`` - the older red-team files (the first is training data
  for the classifier, so optimistic for it; the second was never trained on).

Columns: ``n`` cases; ``blocked`` share of them blocked: for undesired rows that is the recall,
for harmless rows (label ``none``) the false-block rate; profanity aimed at no one is reported in
its own rows, once with the default persona (``profanity: block``) and once with a persona that
allows it. Summary lines: ``undesired blocked`` (recall over all undesired cases of the suite) and
``harmless blocked`` (false blocks over label ``none``). Latency: one ``await moderator.check()``
per sentence after warm-up (p50 / p95 ms, wall time, whatever else is running on the machine), and
the CPU time of the process per check (less sensitive to other load; the encoder uses one thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation import build_moderator  # noqa: E402
from moderation.cases import Case, load_cases, load_redteam  # noqa: E402
from moderation.config import ModerationConfig, StageConfig  # noqa: E402

DATA = ROOT / "tests" / "data"

SETS = {
    "holdout": lambda: load_cases(DATA / "moderation_holdout.tsv"),
    "holdout2": lambda: load_cases(DATA / "moderation_holdout2.tsv"),
    "dev": lambda: load_cases(DATA / "moderation_dev.tsv"),
    "redteam-holdout": lambda: (load_redteam(DATA / "redteam_holdout_unsafe.txt")
                                + load_redteam(DATA / "redteam_holdout_clean.txt")),
    "redteam-dev": lambda: load_redteam(DATA / "redteam_unsafe.txt") + load_redteam(DATA / "redteam_clean.txt"),
}
STACKS = {
    "default": None,  # the configured [moderation.output] backends
    "classifier": ["classifier"],
    "classifier+keywords": ["classifier", "keywords", "blocklist"],
    "legacy (profanity+keywords)": ["profanity", "keywords"],
    "keywords": ["keywords"],
}
FAMILY = SimpleNamespace(name="family", blocklist=[], blocklist_regex=[], profanity="block")
CASUAL = SimpleNamespace(name="casual", blocklist=[], blocklist_regex=[], profanity="allow")


@dataclass
class Outcome:
    case: Case
    blocked: bool
    blocked_casual: bool
    ms: float
    cpu_ms: float
    reason: str


@dataclass
class Run:
    stack: str
    outcomes: list[Outcome] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    skipped: str = ""

    def rate(self, rows: list[Outcome], casual: bool = False) -> float:
        if not rows:
            return float("nan")
        return sum(o.blocked_casual if casual else o.blocked for o in rows) / len(rows)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies_ms if values is None else values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def summary(self, suite: str | None = None) -> dict[str, float]:
        rows = [o for o in self.outcomes if suite is None or o.case.suite == suite]
        undesired = [o for o in rows if o.case.undesired]
        harmless = [o for o in rows if o.case.label == "none"]
        profanity = [o for o in rows if o.case.label == "profanity"]
        return {"undesired_blocked": self.rate(undesired), "harmless_blocked": self.rate(harmless),
                "profanity_blocked_family": self.rate(profanity),
                "profanity_blocked_casual": self.rate(profanity, casual=True),
                "n_undesired": len(undesired), "n_harmless": len(harmless), "n_profanity": len(profanity)}


async def measure(stack: str, backends: list[str] | None, cases: list[Case], rounds: int) -> Run:
    config = ModerationConfig()
    stage = config.output if backends is None else StageConfig(**{**config.output.model_dump(), "backends": backends})
    moderator = build_moderator(stage, config)
    run = Run(stack)
    await moderator.warmup()
    probe = await moderator.check("hello there", "bot", FAMILY)
    if any(b.get("error") for b in probe.backends):
        run.skipped = "; ".join(b["error"] for b in probe.backends if b.get("error"))
        return run
    for round_no in range(rounds):
        for case in cases:
            t0, c0 = time.perf_counter(), time.process_time()
            verdict = await moderator.check(case.text, "bot", FAMILY)
            ms = (time.perf_counter() - t0) * 1000
            cpu = (time.process_time() - c0) * 1000
            run.latencies_ms.append(ms)
            run.cpu_ms.append(cpu)
            if round_no == 0:
                casual = verdict if case.label != "profanity" else await moderator.check(case.text, "bot", CASUAL)
                run.outcomes.append(Outcome(case, not verdict.allowed, not casual.allowed, ms, cpu, verdict.reason))
    return run


def _fmt(value: float) -> str:
    return "   -  " if value != value else f"{100 * value:5.1f}%"


def functionality_table(run: Run) -> str:
    groups: dict[tuple[str, str, str], list[Outcome]] = defaultdict(list)
    for o in run.outcomes:
        kind = "undesired" if o.case.undesired else ("profanity" if o.case.label == "profanity" else "harmless")
        groups[(o.case.suite, o.case.functionality, kind)].append(o)
    head = f"{'suite':<10} {'functionality / category':<26} {'kind':<10} {'n':>4} {'blocked':>8} {'p50 ms':>7} {'p95 ms':>7}"
    lines = [head, "-" * len(head)]
    for (suite, func, kind), rows in sorted(groups.items()):
        ms = [o.ms for o in rows]
        extra = f"   (casual persona: {_fmt(run.rate(rows, casual=True)).strip()})" if kind == "profanity" else ""
        lines.append(f"{suite:<10} {func:<26} {kind:<10} {len(rows):>4} {_fmt(run.rate(rows)):>8} "
                     f"{statistics.median(ms):>7.2f} {run.pct(0.95, ms):>7.2f}{extra}")
    return "\n".join(lines)


def summary_lines(run: Run) -> list[str]:
    lines = []
    for suite in sorted({o.case.suite for o in run.outcomes}):
        s = run.summary(suite)
        line = (f"{run.stack:<28} {suite:<10} undesired blocked {_fmt(s['undesired_blocked'])} "
                f"(n={s['n_undesired']})  harmless blocked {_fmt(s['harmless_blocked'])} (n={s['n_harmless']})")
        if s["n_profanity"]:
            line += (f"  undirected profanity blocked {_fmt(s['profanity_blocked_family'])} family / "
                     f"{_fmt(s['profanity_blocked_casual'])} casual (n={s['n_profanity']})")
        lines.append(line)
    lines.append(f"{run.stack:<28} {'latency':<10} p50 {statistics.median(run.latencies_ms):.2f} ms, "
                 f"p95 {run.pct(0.95):.2f} ms per sentence wall time; CPU time p50 "
                 f"{statistics.median(run.cpu_ms):.2f} ms, p95 {run.pct(0.95, run.cpu_ms):.2f} ms "
                 f"({len(run.latencies_ms)} checks)")
    return lines


async def main_async(args: argparse.Namespace) -> dict[str, list[Run]]:
    logging.getLogger("moderation").setLevel(logging.ERROR)
    stacks = list(STACKS) if args.stacks == "all" else [args.stacks]
    out: dict[str, list[Run]] = {}
    for set_name in (list(SETS) if args.set == "all" else [args.set]):
        cases = SETS[set_name]()
        out[set_name] = [await measure(s, STACKS[s], cases, args.rounds) for s in stacks]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=[*SETS, "all"], default="all", help="which labelled set (default: all)")
    parser.add_argument("--stacks", choices=[*STACKS, "all"], default="default", help="which stack(s) to measure")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the data for latency (default 2)")
    parser.add_argument("--misses", action="store_true", help="list misses and false blocks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({name: [{"stack": r.stack, "skipped": r.skipped or None,
                                  "suites": {s: r.summary(s) for s in sorted({o.case.suite for o in r.outcomes})},
                                  "p50_ms": statistics.median(r.latencies_ms) if r.latencies_ms else None,
                                  "p95_ms": r.pct(0.95) if r.latencies_ms else None,
                                  "cpu_p50_ms": statistics.median(r.cpu_ms) if r.cpu_ms else None}
                                 for r in runs] for name, runs in results.items()}, indent=2))
        return
    for set_name, runs in results.items():
        print(f"=== {set_name} ===")
        for run in runs:
            if run.skipped:
                print(f"{run.stack}: skipped ({run.skipped})")
                continue
            print("\n".join(summary_lines(run)))
        first = next((r for r in runs if not r.skipped), None)
        if first is not None:
            print(f"\nper functionality / category ({first.stack}):")
            print(functionality_table(first))
            if args.misses:
                print("\nmisses (undesired allowed) and false blocks (harmless blocked):")
                for o in first.outcomes:
                    if o.case.undesired and not o.blocked:
                        print(f"  MISS  [{o.case.functionality}] {o.case.text}")
                    elif o.case.label == "none" and o.blocked:
                        print(f"  FALSE [{o.case.functionality}] {o.case.text}  <- {o.reason}")
        print()


if __name__ == "__main__":
    main()
