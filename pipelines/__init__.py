"""Pipeline builders. ``build_pipeline`` is the one place where ``mode`` decides how the bot hears and speaks.

Every builder takes the same :class:`~pipelines.base.BuildContext` (settings, persona, transport) and
returns a :class:`~pipelines.base.BuiltPipeline`; transports, personas, turn tracking and the audit log
don't know which mode runs.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.errors import VoicebotError
from pipelines.base import BuildContext, BuiltPipeline
from pipelines.audio_llm import build_audio_llm
from pipelines.cascade import build_cascade
from pipelines.realtime import build_realtime

BUILDERS: dict[str, Callable[[BuildContext], BuiltPipeline]] = {
    "pipeline": build_cascade,
    "audio-llm": build_audio_llm,
    "realtime": build_realtime,
}


def build_pipeline(ctx: BuildContext) -> BuiltPipeline:
    try:
        builder = BUILDERS[ctx.settings.mode]
    except KeyError:
        raise VoicebotError(f"mode {ctx.settings.mode!r} has no pipeline: choose one of {', '.join(BUILDERS)}") from None
    return builder(ctx)


__all__ = ["BUILDERS", "BuildContext", "BuiltPipeline", "build_pipeline"]
