"""What the modes whose model hears the user's audio itself (audio-llm, interaction) share: the transcript is
optional (``transcribe_for_audit``), and input moderation needs it, so turning it off must be asked for."""

from __future__ import annotations

from typing import ClassVar, Literal

from bot.config import Settings
from bot.errors import VoicebotError
from pipelines.base import Capabilities, ConfigSection, Mode


class AudioInMode(Mode):
    """A mode over one config section with ``transcribe_for_audit``; subclasses set :attr:`section` and
    :attr:`server_turn_detection`."""

    section: ClassVar[Literal["audio_llm", "interaction"]]
    server_turn_detection: ClassVar[bool]

    def transcribes(self, settings: Settings) -> bool:
        return getattr(settings, self.section).transcribe_for_audit

    @property
    def no_transcript_hint(self) -> str:  # type: ignore[override]
        return f"set {self.section}.transcribe_for_audit = true"

    def capabilities(self, settings: Settings) -> Capabilities:
        transcribe = self.transcribes(settings)
        sections: set[ConfigSection] = {self.section, "tts"} | ({"stt"} if transcribe else set())
        return Capabilities(has_transcript=transcribe, text_checkpoint=True,
                            server_turn_detection=self.server_turn_detection, sections=frozenset(sections))

    def check_moderation(self, settings: Settings) -> None:
        """Fail closed: input moderation checks the transcript, and without transcribing there is none."""
        if not self.transcribes(settings) and settings.moderation.input.enabled:
            raise VoicebotError(f"{self.section}.transcribe_for_audit = false leaves input moderation no "
                                "transcript to check: keep transcribing, or turn input moderation off "
                                "explicitly (moderation.input.enabled = false)")
