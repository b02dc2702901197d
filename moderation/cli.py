"""``voicebot moderate``: check text with the configured moderation stack.

Registered by ``bot/cli.py`` as ``app.command("moderate")(moderate)``. Examples::

    voicebot moderate "you are an idiot"
    voicebot moderate --file lines.txt --json          # one JSON object per input line
    voicebot moderate --stage input --persona pirate "where is the treasure map?"

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


def _human(text: str, verdict: Verdict) -> str:
    if verdict.allowed:
        head = f"ALLOWED  {text!r}"
    else:
        cats = ", ".join(verdict.categories) or "-"
        head = f"BLOCKED ({verdict.action})  [{cats}]  {text!r}"
    parts = []
    for b in verdict.backends:
        if b.get("error"):
            parts.append(f"{b['backend']}: error")
            continue
        top = sorted(b.get("scores", {}).items(), key=lambda kv: -kv[1])[:2]
        shown = ", ".join(f"{k} {v:.2f}" for k, v in top) or "no hits"
        parts.append(f"{b['backend']}: {shown}")
    lines = [head, f"  {verdict.reason}"]
    if parts:
        lines.append(f"  {' | '.join(parts)}  ({verdict.latency_ms:.2f} ms)")
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
            typer.echo(_human(line, verdict))
