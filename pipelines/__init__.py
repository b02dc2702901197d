"""The modes. :func:`mode_for` is the one place where ``mode`` decides how the bot hears and speaks.

Each mode is one :class:`~pipelines.base.Mode` object in its own module, registered in :data:`MODES` under
its name (the ``Mode`` Literal in bot/config.py). Adding a mode: one module with a ``Mode`` subclass, its
name in the Literal, one line here. Transports, personas, turn tracking and the audit log don't know which
mode runs; callers add what they need through :class:`~pipelines.base.SessionHooks`.
"""

from __future__ import annotations

import typing

from bot.config import Mode as ModeName
from bot.config import Settings
from bot.errors import VoicebotError
from pipelines.audio_llm import AudioLLMMode
from pipelines.base import (BuildContext, BuiltPipeline, Capabilities, Mode, ModeDescription,
                            SessionHooks)
from pipelines.cascade import PipelineMode
from pipelines.interaction import InteractionMode
from pipelines.realtime import RealtimeMode

MODES: dict[ModeName, Mode] = {
    "pipeline": PipelineMode(),
    "audio-llm": AudioLLMMode(),
    "realtime": RealtimeMode(),
    "interaction": InteractionMode(),
}
assert set(MODES) == set(typing.get_args(ModeName)), "every mode in bot.config.Mode needs its Mode object"


def mode_for(settings: Settings | str) -> Mode:
    """The Mode object of ``settings.mode`` (or of a mode name, e.g. from Discord's /mode)."""
    name = settings if isinstance(settings, str) else settings.mode
    try:
        return MODES[name]  # type: ignore[index]
    except KeyError:
        raise VoicebotError(f"unknown mode {name!r}: choose one of {', '.join(MODES)}") from None


def build_pipeline(ctx: BuildContext) -> BuiltPipeline:
    mode = mode_for(ctx.settings)
    mode.check_hooks(ctx.settings, ctx.hooks)
    return mode.build(ctx)


__all__ = ["MODES", "BuildContext", "BuiltPipeline", "Capabilities", "Mode", "ModeDescription", "SessionHooks",
           "build_pipeline", "mode_for"]
