"""The mode extension point: what a mode is, what it is built from, and what it returns.

A mode (``mode = "pipeline" | "audio-llm" | "realtime"``) is one :class:`Mode` object in one module under
``pipelines/``, registered in ``pipelines/__init__.py``. It knows:

* :meth:`Mode.capabilities` — what callers may rely on (a transcript of the user, reply text before speech,
  who detects turns, which config sections are used);
* :meth:`Mode.preflight` — cheap checks before anything loads (keys, servers), failing in one line;
* :meth:`Mode.describe` — what the banner, ``config show`` and ``voicebot models`` say about it;
* :meth:`Mode.build` — the pipecat pipeline for one session.

Callers never patch a built pipeline. What they need goes in :class:`SessionHooks`, which every builder
places itself: processors on the user's finished transcript, processors on the reply text, listeners of
turns and turn events, and whether a user turn with no words (or none that were let through) is answered.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport

from bot.config import Mode as ModeName
from bot.config import Settings
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.processors.transcript_receipt import TranscriptReceipt
from bot.turns import EventListener, TurnListener

ConfigSection = Literal["stt", "llm", "tts", "audio_llm", "realtime", "interaction"]
"""The config sections that only some modes use. Every mode uses the others (vad, transport, audit,
moderation, discord)."""

MODE_SECTIONS: tuple[ConfigSection, ...] = ("stt", "llm", "tts", "audio_llm", "realtime", "interaction")


@dataclass(frozen=True)
class Capabilities:
    """What a mode offers its callers, for the settings it runs with."""

    has_transcript: bool
    """The user's words arrive as ``TranscriptionFrame`` s that :attr:`SessionHooks.on_transcript` processors
    see before the turn is answered (and that input moderation checks)."""
    text_checkpoint: bool
    """The reply exists as text before it is spoken (an LLM writes it, TTS speaks it): output moderation
    checks each piece before speech, and :attr:`SessionHooks.on_reply_text` processors can be placed."""
    server_turn_detection: bool
    """A remote model decides when the user's turn ends (the local VAD only times speech and barge-in)."""
    sections: frozenset[ConfigSection]
    """Mode-specific config sections this mode reads; the rest are ignored."""

    def uses(self, section: ConfigSection) -> bool:
        return section in self.sections

    @property
    def unused_sections(self) -> list[ConfigSection]:
        """The mode-specific sections this mode ignores, in config order."""
        return [s for s in MODE_SECTIONS if s not in self.sections]


@dataclass(frozen=True)
class ModeDescription:
    """What is said about a mode before it runs: the CLI banner, ``config show``."""

    mode: ModeName
    persona: str
    engine: tuple[tuple[str, str], ...]
    """What thinks, as ``key=value`` pairs: ``(("llm", "embedded"),)``, ``(("realtime", model), ("holdback",
    "strict"))``. Only what this mode uses."""
    capabilities: Capabilities

    def banner(self) -> str:
        """``mode=realtime persona=Nova realtime=gpt-realtime-2.1 holdback=strict``"""
        return " ".join([f"mode={self.mode}", f"persona={self.persona}", *(f"{k}={v}" for k, v in self.engine)])


@dataclass(frozen=True)
class SessionHooks:
    """What a caller (the CLI, Discord, a server transport) adds to a session, placed by the mode's builder.

    Processors are pipecat ``FrameProcessor`` instances; each instance goes into one pipeline, so a caller
    makes new ones for every session it starts.

    ``on_transcript``: placed where the user's finished transcripts (downstream ``TranscriptionFrame``) pass
    before the turn is answered: after STT and before the user aggregator in ``pipeline`` and ``audio-llm``;
    after the realtime service's input transcription in ``realtime``. A processor passes a transcript on,
    holds it, or drops it; a turn none of whose transcripts pass is not answered (realtime: the server's
    response is never created and the user's item is deleted from its conversation). The turn tracker
    records every transcript as heard, passed or not, and closes a turn held back (``UserTurnHeldFrame`` from
    the receipt the builder puts after the hooks). A user turn ends at a frame for which
    :func:`bot.frames.ends_user_turn` is true. Other frames (audio included) must be passed on.
    Needs :attr:`Capabilities.has_transcript`. See docs/modes.md.

    ``on_reply_text``: placed on the reply's pieces (``AggregatedTextFrame``) after output moderation and
    before TTS: they see exactly the pieces about to be spoken. A processor may withhold a piece; it must not
    add words (they would not be moderated). Needs :attr:`Capabilities.text_checkpoint`.

    ``on_audio``: placed on the input audio (``InputAudioRawFrame`` at ``transport.sample_rate``) right after the
    echo policy, before the VAD, in every mode: what the microphone hears, minus the bot's own voice where the
    echo policy removes it. A processor must pass every frame on (e.g. the attention cue detectors, which may
    also push frames for the bot to say: see :attr:`Capabilities.text_checkpoint`).

    ``on_turn`` / ``on_event``: called with each finished :class:`~bot.turns.Turn` and with each staged
    ``(kind, data)`` event of the turn tracker (``user.started_speaking``, ``stt.final``, ...).

    ``answer_empty_turns``: whether a user turn that ended with no transcript (nothing recognised, or every
    transcript held back by an ``on_transcript`` processor) gets pipecat's "empty turn" reply, which asks
    the LLM to prompt the user again. A gate that holds transcripts back sets this False.
    """

    on_transcript: Sequence[FrameProcessor] = ()
    on_reply_text: Sequence[FrameProcessor] = ()
    on_audio: Sequence[FrameProcessor] = ()
    on_turn: Sequence[TurnListener] = ()
    on_event: Sequence[EventListener] = ()
    answer_empty_turns: bool = True


@dataclass
class BuildContext:
    settings: Settings
    persona: Persona
    transport: BaseTransport
    hooks: SessionHooks = field(default_factory=SessionHooks)


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    context: LLMContext
    """The conversation as the LLM sees it: what the user said and what the bot actually said."""
    models: dict[str, str] = field(default_factory=dict)
    """Stage -> model description, for the console and the audit header."""


def transcript_stage(hooks: SessionHooks) -> tuple[list[FrameProcessor], TranscriptReceipt | None]:
    """The processors a builder places on the user's transcript: the caller's, then the receipt that learns
    which turns they let through (none without hooks: nothing to learn)."""
    if not hooks.on_transcript:
        return [], None
    receipt = TranscriptReceipt()
    return [*hooks.on_transcript, receipt], receipt


class Mode(ABC):
    """One way for the bot to hear and speak. Subclasses set :attr:`name` and implement the four methods."""

    name: ClassVar[ModeName]

    @abstractmethod
    def capabilities(self, settings: Settings) -> Capabilities: ...

    @abstractmethod
    def preflight(self, settings: Settings) -> None:
        """Cheap checks before models load (keys, servers reachable); raise VoicebotError in one line."""

    @abstractmethod
    def engine(self, settings: Settings) -> tuple[tuple[str, str], ...]:
        """What thinks, as (key, value) pairs for the banner."""

    @abstractmethod
    def build(self, ctx: BuildContext) -> BuiltPipeline: ...

    def describe(self, settings: Settings, persona: Persona) -> ModeDescription:
        return ModeDescription(mode=self.name, persona=persona.name, engine=self.engine(settings),
                               capabilities=self.capabilities(settings))

    def check_hooks(self, settings: Settings, hooks: SessionHooks) -> None:
        """Refuse hooks this mode cannot honour, in one line, before anything is built."""
        caps = self.capabilities(settings)
        if hooks.on_transcript and not caps.has_transcript:
            raise VoicebotError(f"mode {self.name} has no user transcript here, so transcript processors "
                                f"({_names(hooks.on_transcript)}) cannot run: {self.no_transcript_hint}")
        if hooks.on_reply_text and not caps.text_checkpoint:
            raise VoicebotError(f"mode {self.name} speaks without reply text first, so reply-text processors "
                                f"({_names(hooks.on_reply_text)}) cannot run: use mode pipeline or audio-llm")

    no_transcript_hint: ClassVar[str] = "use a mode that transcribes the user"


def _names(processors: Sequence[Any]) -> str:
    return ", ".join(type(p).__name__ for p in processors)
