"""Measure the moderation backends against the red-team set.

    python benchmarks/moderation.py            # table per backend + the default stack
    python benchmarks/moderation.py --misses   # also list what each one got wrong
    python benchmarks/moderation.py --json     # machine-readable numbers

Data: two red-team sets, each an unsafe file (must be blocked) and a clean file (must pass):

* ``dev``: ``tests/data/redteam_{unsafe,clean}.txt``. The lexicon was refined once after seeing
  its misses, so its numbers are optimistic.
* ``holdout``: ``tests/data/redteam_holdout_{unsafe,clean}.txt``, written after the last lexicon
  change and never used for tuning: the honest estimate.
 Every backend runs with the default ``[moderation.output]`` thresholds. ``detoxify``
and ``openai`` are measured only when they can run here (checkpoint configured / API key set);
otherwise they are listed as skipped with the reason.

Columns: precision = blocked unsafe / all blocked; recall = blocked-unsafe % = share of unsafe lines
blocked; blocked-clean % = share of clean lines blocked (false positives); latency = wall time of
one ``await moderator.check(...)`` per sentence, after a warm-up, p50 and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moderation import build_moderator  # noqa: E402
from moderation.config import ModerationConfig, StageConfig  # noqa: E402

DATA = ROOT / "tests" / "data"


def load_lines(path: Path) -> list[tuple[str, str]]:
    """``(label, text)`` pairs from a red-team file (``label<TAB>text``; ``#`` comments)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, sep, text = line.partition("\t")
        out.append((label.strip(), text.strip()) if sep else ("", label.strip()))
    return out


@dataclass
class Result:
    name: str
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[tuple[str, str]] = field(default_factory=list)
    false_blocks: list[tuple[str, str, str]] = field(default_factory=list)
    per_label: dict[str, list[int]] = field(default_factory=dict)  # label -> [blocked, total]
    skipped: str = ""

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def blocked_clean(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def to_dict(self) -> dict:
        return {
            "backend": self.name, "skipped": self.skipped or None,
            "precision": round(self.precision, 4), "recall": round(self.recall, 4),
            "blocked_unsafe_pct": round(100 * self.recall, 2),
            "blocked_clean_pct": round(100 * self.blocked_clean, 2),
            "latency_p50_ms": round(statistics.median(self.latencies_ms), 4) if self.latencies_ms else None,
            "latency_p95_ms": round(self.pct(0.95), 4) if self.latencies_ms else None,
            "per_label": {k: {"blocked": v[0], "total": v[1]} for k, v in sorted(self.per_label.items())},
            "misses": [{"label": lab, "text": t} for lab, t in self.misses],
            "false_blocks": [{"label": lab, "text": t, "reason": r} for lab, t, r in self.false_blocks],
        }


async def measure(name: str, backends: list[str], config: ModerationConfig,
                  unsafe: list[tuple[str, str]], clean: list[tuple[str, str]], rounds: int) -> Result:
    stage = StageConfig(**{**config.output.model_dump(), "backends": backends})
    moderator = build_moderator(stage, config)
    result = Result(name)
    await moderator.warmup()
    probe = await moderator.check("hello there", "user", None)
    if any(b.get("error") for b in probe.backends):
        result.skipped = "; ".join(b["error"] for b in probe.backends if b.get("error"))
        return result
    for label, text in unsafe[:5] + clean[:5]:  # warm caches
        await moderator.check(text, "user", None)
    for round_no in range(rounds):
        for expect_block, items in ((True, unsafe), (False, clean)):
            for label, text in items:
                t0 = time.perf_counter()
                verdict = await moderator.check(text, "user", None)
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                if round_no:
                    continue
                blocked = not verdict.allowed
                counts = result.per_label.setdefault(label, [0, 0])
                counts[0] += blocked
                counts[1] += 1
                if expect_block and blocked:
                    result.tp += 1
                elif expect_block:
                    result.fn += 1
                    result.misses.append((label, text))
                elif blocked:
                    result.fp += 1
                    result.false_blocks.append((label, text, verdict.reason))
                else:
                    result.tn += 1
    return result


def table(results: list[Result], n_unsafe: int, n_clean: int) -> str:
    head = (f"{'backend':<30} {'precision':>9} {'recall':>7} {'blocked unsafe':>15} {'blocked clean':>14} "
            f"{'p50 ms':>8} {'p95 ms':>8}")
    lines = [f"red-team set: {n_unsafe} unsafe lines, {n_clean} clean lines", head, "-" * len(head)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.name:<30} skipped: {r.skipped}")
            continue
        lines.append(
            f"{r.name:<30} {r.precision:>9.3f} {r.recall:>7.3f} {100 * r.recall:>14.1f}% "
            f"{100 * r.blocked_clean:>13.1f}% {statistics.median(r.latencies_ms):>8.3f} {r.pct(0.95):>8.3f}")
    return "\n".join(lines)


def per_label_table(results: list[Result]) -> str:
    labels = sorted({lab for r in results for lab in r.per_label})
    shown = [r for r in results if not r.skipped]
    head = f"{'label':<15}" + "".join(f"{r.name.split(' ')[0]:>12}" for r in shown)
    lines = ["blocked per label (blocked/total):", head, "-" * len(head)]
    for lab in labels:
        row = f"{lab or '-':<15}"
        for r in shown:
            b, t = r.per_label.get(lab, [0, 0])
            row += f"{f'{b}/{t}':>12}"
        lines.append(row)
    return "\n".join(lines)


SETS = {"dev": ("redteam_unsafe.txt", "redteam_clean.txt"),
        "holdout": ("redteam_holdout_unsafe.txt", "redteam_holdout_clean.txt")}


def load_set(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    unsafe_file, clean_file = SETS[name]
    return load_lines(DATA / unsafe_file), load_lines(DATA / clean_file)


async def main_async(args: argparse.Namespace, set_name: str) -> list[Result]:
    config = ModerationConfig()
    if args.detoxify_checkpoint:
        config = config.model_copy(update={"detoxify_checkpoint": args.detoxify_checkpoint})
    unsafe, clean = load_set(set_name)
    runs = [("profanity", ["profanity"]), ("keywords", ["keywords"]),
            ("default (profanity+keywords)", list(config.output.backends)),
            ("detoxify", ["detoxify"]), ("openai", ["openai"])]
    results = []
    logging.getLogger("moderation").setLevel(logging.ERROR)  # skipped backends are reported below
    for name, backends in runs:
        results.append(await measure(name, backends, config, unsafe, clean, args.rounds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", action="store_true", help="list misses and false blocks")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the data for latency")
    parser.add_argument("--detoxify-checkpoint", default="", help="local Detoxify checkpoint to measure")
    parser.add_argument("--set", choices=[*SETS, "all"], default="all", help="which red-team set")
    args = parser.parse_args()
    names = list(SETS) if args.set == "all" else [args.set]
    everything = {}
    for set_name in names:
        results = asyncio.run(main_async(args, set_name))
        everything[set_name] = results
        if args.json:
            continue
        unsafe, clean = load_set(set_name)
        print(f"=== {set_name} set ===")
        print(table(results, len(unsafe), len(clean)))
        print()
        print(per_label_table(results))
        print()
        if args.misses:
            for r in results:
                if r.skipped:
                    continue
                print(f"== {set_name} / {r.name}: {len(r.misses)} unsafe lines allowed")
                for label, text in r.misses:
                    print(f"  [{label}] {text}")
                print(f"== {set_name} / {r.name}: {len(r.false_blocks)} clean lines blocked")
                for label, text, reason in r.false_blocks:
                    print(f"  [{label}] {text}  <- {reason}")
                print()
    if args.json:
        print(json.dumps({k: [r.to_dict() for r in v] for k, v in everything.items()}, indent=2))


if __name__ == "__main__":
    main()
