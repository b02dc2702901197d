"""Building the moderator for a stage from config."""

from __future__ import annotations

from bot.errors import VoicebotError
from moderation.backends import make_backend
from moderation.base import Moderator
from moderation.combined import DisabledModerator, StageModerator
from moderation.config import ModerationConfig, StageConfig

__all__ = ["build_moderator"]


def build_moderator(stage: StageConfig, config: ModerationConfig, name: str = "") -> Moderator:
    """The moderator for ``stage`` (e.g. ``config.output``).

    Cheap: backends are only constructed here; models, clients and keys are loaded on
    :meth:`Moderator.warmup` or the first check, and a backend that cannot load makes checks
    fail closed with a reason saying why (missing package, checkpoint or API key). Raises
    :class:`~bot.errors.VoicebotError` only for a config that cannot work at all.
    """
    if not stage.enabled:
        return DisabledModerator()
    try:
        backends = [make_backend(b, config) for b in dict.fromkeys(stage.backends)]
    except ValueError as exc:
        raise VoicebotError(f"{exc} (in the moderation config)") from None
    return StageModerator(backends, stage, config.timeout_ms, name=name)
