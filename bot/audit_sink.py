"""Connects a running session to its audit log: header, staged events, one ``turn`` record per turn."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from bot.audit import AuditWriter
from bot.config import Settings
from bot.persona import Persona
from bot.recorder import AudioRecorder
from bot.turns import Turn, TurnTracker

PAD_SECS = 0.3
"""User audio kept around the detected speech, so the recording has its first and last sounds."""


def framework_version() -> str:
    try:
        return importlib.metadata.version("voicebot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def session_header(settings: Settings, persona: Persona, models: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "voicebot_version": framework_version(),
        "mode": settings.mode,
        "persona": {"name": persona.name, "sha256": persona.sha256, "source": persona.source},
        "config_hash": settings.config_hash(),
        "config": settings.public_dict(),
        "models": models,
        **extra,
    }


class AuditSink:
    """Subscribes to a :class:`TurnTracker` and writes what it reports."""

    def __init__(self, writer: AuditWriter, tracker: TurnTracker, recorder: AudioRecorder) -> None:
        self.writer = writer
        self._recorder = recorder
        tracker.event_listeners.append(self.on_event)
        tracker.turn_listeners.append(self.on_turn)

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        self.writer.record(kind, data)

    def on_turn(self, turn: Turn) -> None:
        summary = turn.summary()
        if turn.modality == "text":  # typed and answered in text: no audio on either side
            self.writer.record_turn(summary)
            return
        start = (turn.speech_start or 0.0) - PAD_SECS
        end = (turn.speech_end if turn.speech_end is not None else turn.t_transcript or start) + PAD_SECS
        bot = self._recorder.take_played()
        if summary["user"] is None:  # turn 0: the bot spoke first (greeting)
            self.writer.record_turn(summary, bot_audio=bot if len(bot[0]) else None)
            return
        user = self._recorder.user_audio(max(0.0, start), end)
        self.writer.record_turn(summary, user_audio=user if len(user[0]) else None,
                                bot_audio=bot if len(bot[0]) else None)
        self._recorder.forget_heard_before(end)
