"""``voicebot moderate``: check text with the configured moderation stack.

Registered by ``bot/cli.py`` as ``app.command("moderate")(moderate)``. Examples::

    voicebot moderate "you are an idiot"
    voicebot moderate --file lines.txt --json          # one JSON object per input line
    voicebot moderate --stage input --persona pirate "where is the treasure map?"
    voicebot moderate --explain "k1ll 4ll th3 g4ys"       # which layer decided, scores, evidence

Always exits 0 when the check ran (a blocked text is a result, not an error).
"""

from __future__ import annotations

import asyncio
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bot.config import load_settings
from bot.errors import VoicebotError
from bot.persona import load_persona
from moderation.factory import build_moderator
from moderation.verdict import Verdict

__all__ = ["moderate"]


class Stage(str, Enum):
    """Which ``[moderation.<stage>]`` settings to use."""

    input = "input"
    output = "output"


def _read_inputs(text: str | None, file: Path | None) -> list[str]:
    if text is not None and file is not None:
        raise VoicebotError("give either TEXT or --file, not both")
    if text is not None:
        return [text]
    if file is None:
        raise VoicebotError('nothing to check: give TEXT (voicebot moderate "some text") or --file FILE')
    if str(file) == "-":
        content = sys.stdin.read()
    else:
        if not file.is_file():
            raise VoicebotError(f"file {file} not found: give an existing text file, one input per line")
        try:
            content = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VoicebotError(f"cannot read {file} ({exc}): give a UTF-8 text file, one input per line") from None
    lines = [ln.strip() for ln in content.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _top(scores: dict[str, float], n: int) -> str:
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.2f}" for k, v in top) or "no hits"


def _human(text: str, verdict: Verdict) -> str:
    if verdict.allowed:
        head = f"ALLOWED  {text!r}"
    else:
        cats = ", ".join(verdict.categories) or "-"
        head = f"BLOCKED ({verdict.action})  [{cats}]  {text!r}"
    parts = [f"{b['backend']}: error" if b.get("error") else f"{b['backend']}: {_top(b.get('scores', {}), 2)}"
             for b in verdict.backends]
    lines = [head, f"  {verdict.reason}"]
    if parts:
        lines.append(f"  {' | '.join(parts)}  ({verdict.latency_ms:.2f} ms)")
    return "\n".join(lines)


def _explain(text: str, verdict: Verdict) -> str:
    """Which layer decided, and every layer's scores and evidence."""
    lines = [_human(text, verdict).splitlines()[0]]
    deciders = verdict.backend if not verdict.allowed else "nobody blocked"
    lines.append(f"  decided by: {deciders}: {verdict.reason}")
    for b in verdict.backends:
        state = "ERROR" if b.get("error") else ("pass" if b["allowed"] else "BLOCK")
        lines.append(f"  {b['backend']:<11} {state:<5} {b.get('latency_ms', 0.0):7.2f} ms  "
                     f"{b['error'] if b.get('error') else _top(b.get('scores', {}), 9)}")
        details = b.get("details", {})
        if "reading" in details:
            lines.append(f"  {'':<11} read as {details['reading']!r}")
        for m in details.get("matches", [])[:3]:
            lines.append(f"  {'':<11} rule {m.get('rule')!r} -> {m.get('category')} {m.get('score'):.2f} "
                         f"on {m.get('text')!r}")
        if "answer" in details:
            lines.append(f"  {'':<11} {details.get('model')} ({details.get('format')}) answered {details['answer']!r}")
    return "\n".join(lines)


def moderate(
    text: Annotated[Optional[str], typer.Argument(help="Text to check. Omit it when using --file.")] = None,
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", help="Check every line of FILE ('-' = stdin); blank and '#' lines are skipped.")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per input line (text, allowed, categories, reason, backends...).")] = False,
    stage: Annotated[Stage, typer.Option(
        "--stage", help="Moderation settings to use: input (what users say) or output (what the bot says).",
        case_sensitive=False)] = Stage.output,
    persona: Annotated[Optional[str], typer.Option(
        "--persona", help="Persona name or YAML path whose blocklist applies (default: the configured one).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="TOML config file (default: VOICEBOT_CONFIG, else built-in defaults).")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show which layer decided and every layer's scores and evidence "
                          "(classifier reading, lexicon rules, guard model answer).")] = False,
) -> None:
    """Check text with the moderation stack and show the verdict of each backend."""
    inputs = _read_inputs(text, file)
    settings = load_settings(config_file=config)
    persona_obj = load_persona(persona or settings.persona)
    stage_name = stage.value if isinstance(stage, Stage) else str(stage)
    moderator = build_moderator(settings.moderation.stage(stage_name), settings.moderation, name=stage_name)
    role = "user" if stage_name == "input" else "bot"

    async def run() -> list[Verdict]:
        await moderator.warmup()
        return [await moderator.check(line, role, persona_obj) for line in inputs]

    verdicts = asyncio.run(run())
    for line, verdict in zip(inputs, verdicts):
        if json_output:
            record: dict[str, Any] = {"text": line, "stage": stage_name, "persona": persona_obj.name,
                                      **verdict.to_dict()}
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            typer.echo(_explain(line, verdict) if explain else _human(line, verdict))
