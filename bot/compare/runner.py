"""Run every variant on every input, each into its own audit sessions, and collect the outcomes.

Variants run one after another (never at the same time: on a small CPU two sessions would slow each
other and the latencies compared would be the machine's, not the variants'). A variant whose server is
down, whose key is missing or whose config is invalid is reported as ``skipped`` with the one-line
reason and the run goes on; one that breaks mid-run is ``failed`` with its reason, keeping what it
recorded before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.compare.inputs import InputItem
from bot.compare.results import (
    Comparison,
    SessionRef,
    TurnOutcome,
    VariantResult,
    aggregate,
    agreements,
    outcomes_from_session,
    session_ref,
)
from bot.compare.variants import Variant
from bot.errors import VoicebotError


class BaseConfig(BaseModel):
    """What every variant shares: the config file, ``--set`` values and persona."""

    model_config = ConfigDict(frozen=True)

    config: Path | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    persona: str | None = None


Progress = Callable[[str], None]


def variant_settings(variant: Variant, base: BaseConfig, audit_dir: Path):
    from bot.config import load_settings  # noqa: PLC0415

    overrides = {**base.overrides, **variant.overrides, "audit.dir": str(audit_dir), "audit.enabled": True}
    if base.persona and "persona" not in variant.overrides:
        overrides["persona"] = base.persona
    return load_settings(variant.config or base.config, overrides)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, VoicebotError) else f"{type(exc).__name__}: {text}".rstrip(": ")


async def run_variant(variant: Variant, base: BaseConfig, inputs: list[InputItem], out_dir: Path,
                      progress: Progress = lambda _: None) -> VariantResult:
    from bot.persona import load_persona  # noqa: PLC0415
    from bot.replay import replay  # noqa: PLC0415
    from bot.session import run_file  # noqa: PLC0415
    from pipelines import mode_for  # noqa: PLC0415

    folder = out_dir / variant.slug
    result = VariantResult(variant=variant)
    try:
        settings = variant_settings(variant, base, folder / "audit")
        result.mode = settings.mode
        persona = load_persona(settings.persona)
        mode_for(settings).preflight(settings)
    except VoicebotError as exc:
        result.status, result.reason = "skipped", _one_line(exc)
        progress(f"{variant.name}: skipped ({result.reason})")
        return result
    folder.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    crashed = False
    for item in inputs:
        reply = folder / f"{item.name}-reply.wav"
        progress(f"{variant.name}: {item.name} ...")
        try:
            if item.kind == "audit":
                rep = await replay(settings, persona, item.path, reply_path=reply)
                audit_dir, errors = rep.replay_dir, rep.errors
            else:
                ran = await run_file(settings, persona, item.path, reply)
                audit_dir, errors = ran.audit_dir, ran.errors
        except Exception as exc:  # noqa: BLE001 - one variant's failure must not end the comparison
            crashed = crashed or not isinstance(exc, VoicebotError)
            problems.append(f"{item.name}: {_one_line(exc)}")
            progress(f"{variant.name}: {item.name} failed ({problems[-1]})")
            continue
        if audit_dir is None:
            problems.append(f"{item.name}: no audit session was written")
            continue
        rows: list[TurnOutcome] = outcomes_from_session(audit_dir, item.name, item.reference)
        result.turns += rows
        result.sessions.append(session_ref(audit_dir, item.name, reply if reply.is_file() else None))
        if errors and not rows:
            problems.append(f"{item.name}: {errors[0]}")
        progress(f"{variant.name}: {item.name}: {len(rows)} turns")
    if problems:
        result.reason = problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        if not result.turns:  # nothing ran: e.g. the server is down or refused the session
            result.status = "failed" if crashed else "skipped"
    result.aggregates = aggregate(result.turns)
    return result


async def run_comparison(variants: list[Variant], inputs: list[InputItem], base: BaseConfig, out_dir: Path,
                         progress: Progress = lambda _: None) -> Comparison:
    results = [await run_variant(v, base, inputs, out_dir, progress) for v in variants]
    persona = base.persona or str(base.overrides.get("persona") or "default")
    return Comparison(created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), persona=persona,
                      inputs=inputs, variants=results, agreement=agreements(results))
