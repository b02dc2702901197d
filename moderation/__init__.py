"""Text moderation for voicebot: what the user says and what the bot will say.

``build_moderator(settings.moderation.output, settings.moderation)`` gives a :class:`Moderator`;
``await moderator.check(text, role, persona)`` gives a :class:`Verdict` and never raises:
a failing or slow backend blocks the text (fail-closed). See ``docs/moderation.md``.
"""

from moderation.base import Backend, BackendUnavailable, Moderator, Scores
from moderation.config import ModerationConfig, StageConfig
from moderation.factory import build_moderator
from moderation.verdict import BackendResult, Verdict

__all__ = [
    "Backend",
    "BackendResult",
    "BackendUnavailable",
    "Moderator",
    "ModerationConfig",
    "Scores",
    "StageConfig",
    "Verdict",
    "build_moderator",
]
