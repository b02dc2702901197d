"""voicebot's own typed frames. Observers (turn tracking, audit) read them; processors ignore them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.frames.frames import DataFrame, Frame, SystemFrame, UserStoppedSpeakingFrame


@dataclass
class ModerationVerdictFrame(SystemFrame):
    """A moderation decision on one text: the user's turn (stage "input") or one bot sentence ("output").

    A system frame so that it is never dropped by an interruption: every decision reaches the audit log.
    """

    stage: Literal["input", "output"] = "output"
    text: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    """``Verdict.to_dict()``: the form the audit log stores."""
    index: int | None = None
    """output: the sentence's position in the reply (0-based)."""


SentenceFate = Literal["spoken", "blocked", "dropped", "withheld", "posted"]


@dataclass
class BotSentenceFrame(SystemFrame):
    """One sentence (reply piece) the LLM generated, and what became of it: "spoken" (sent to TTS), "blocked"
    by moderation, "dropped" because an earlier sentence of the same reply was blocked, or "withheld" because
    it restates the persona's instructions (:mod:`bot.prompt_leak`; ``reason`` says why); "posted" is a text
    turn's reply sentence (:mod:`bot.text_chat`)."""

    index: int = 0
    text: str = ""
    fate: SentenceFate = "spoken"
    spoken_instead: str = ""
    """blocked: the line spoken in its place (the persona's refusal)."""
    reason: str = ""
    """withheld: why it was not said."""


@dataclass
class ReplyWithheldFrame(SystemFrame):
    """A reply ended with every piece of it withheld (:mod:`bot.prompt_leak`): nothing of it will be played,
    so its turn is over."""


@dataclass
class InputRefusedFrame(SystemFrame):
    """The user's turn was refused by input moderation: it never reached the LLM."""

    text: str = ""
    refusal: str = ""
    """The line spoken instead."""


@dataclass
class SpeakerFrame(SystemFrame):
    """Pushed by a multi-speaker input transport (Discord) before the audio of a new speaker: the turns
    that start from here on are ``speaker``'s (a stable label such as a display name or ``user:<id>``)."""

    speaker: str = "user"


@dataclass
class TurnTimingFrame(SystemFrame):
    """Extra timings (milliseconds) of the turn being answered, measured by the stage that knows them, e.g.
    realtime hold-back (``holdback_ms``). Turn tracking merges them into ``Turn.timings()``."""

    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class TurnResumedFrame(SystemFrame):
    """The turn had ended, but the user went on talking within ``vad.resume_secs`` of the end of their speech
    (a false end of turn):
    the answer to ``text`` is withdrawn (its playback is cut, and it leaves the LLM context) and what the
    user says now joins that turn. Broadcast by the end-of-turn strategy (bot/turn_speculation.py) as the
    new speech starts; turn tracking merges the two and audits the withdrawn answer."""

    text: str = ""
    """The transcript of the turn that is being continued."""
    gap_secs: float = 0.0
    """End of the turn's speech (VAD stop) -> the resumed speech confirmed by the VAD."""


@dataclass
class FalseInterruptionFrame(SystemFrame):
    """The user's speech that cut the bot off held no words (a cough, a door, a noise the VAD took for
    speech): the bot resumes what was cut, from the sentence it was in. Broadcast by the end-of-turn
    strategy (bot/turn_speculation.py) ``vad.false_interruption_secs`` after that sound ended with no
    transcript; turn tracking finds the cut sentences and audits ``answer.resumed``."""


@dataclass
class NoWordsFrame(SystemFrame):
    """The STT heard a stretch of speech (as the VAD judged it) and found no words in it: a cough, a door,
    a murmur. Pushed by the STT in place of a transcript, so that the end-of-turn strategy can tell a false
    interruption from a slow transcript."""


@dataclass
class UserTurnTranscribedFrame(DataFrame):
    """Downstream, right after the transcript of a user turn whose end a remote model decided (realtime: the
    server's input transcription of one committed turn). In order with the transcript, and never dropped by an
    interruption, so the processors on the transcript (``SessionHooks.on_transcript``) know the turn is over
    and the realtime service learns whether its transcript was let through."""

    item_id: str = ""
    interruptible: bool = field(default=False, init=False)


@dataclass
class UserTurnHeldFrame(SystemFrame):
    """A user turn ended and none of its transcripts came through the transcript processors
    (``SessionHooks.on_transcript``): it is heard (turn tracking and the audit log keep it) and not answered."""


def ends_user_turn(frame: Frame) -> bool:
    """Whether a transcript processor should treat ``frame`` as the end of the user's turn: the user
    aggregator's ``UserStoppedSpeakingFrame`` (pipeline, audio-llm; it is broadcast, so processors before the
    aggregator see it going upstream), the realtime service's :class:`UserTurnTranscribedFrame`, or a
    :class:`SpeakerFrame` (the input now comes from someone else)."""
    return isinstance(frame, (UserStoppedSpeakingFrame, UserTurnTranscribedFrame, SpeakerFrame))


@dataclass
class ContextTrimmedFrame(SystemFrame):
    """The LLM service dropped the oldest turns of the conversation so the request fits the model's context
    window (:mod:`bot.context_window`). ``data`` is the ``llm.context_trimmed`` audit record's payload."""

    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TurnFailedFrame(DataFrame):
    """The turn could not be answered (the LLM failed, or the turn does not fit its window): the persona's
    fallback line is spoken instead and the turn is marked failed. A data frame, so that it travels with
    the response it replaces: held with a speculative answer, dropped with it if that is withdrawn."""

    reason: str = ""
    fallback: str = ""
    """The line spoken instead."""
    reported: bool = False
    """The error was already reported with an ErrorFrame (not to be counted twice)."""


@dataclass
class AuditEventFrame(SystemFrame):
    """A mode's own audit event (e.g. ``interaction.decision``): turn tracking writes ``kind`` with ``data`` to
    the audit log as it is (the kinds and their fields are documented in docs/audit-log.md)."""

    kind: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttentionDecisionFrame(SystemFrame):
    """The attention policy (bot/attention/gate.py) decided to answer (``speak``) or not (``silent``) what the
    user said; turn tracking writes it to the audit log as ``attention.decision``."""

    decision: Literal["speak", "silent"] = "silent"
    reason: str = "not-addressed"
    """all | addressed | follow-up | relevant | not-addressed | irrelevant | undecided | acknowledged | empty"""
    text: str = ""
    detail: str = ""


@dataclass
class CueAlertFrame(SystemFrame):
    """The bot heard a sound cue (bot/attention/speaker.py) and is about to say ``text`` unprompted (turn
    tracking opens a bot-initiated turn for it), or did not say it (``spoken`` False, ``why``). ``onset_s`` and
    ``detected_s`` are seconds of the input audio the detector heard."""

    cue: str = ""
    text: str = ""
    onset_s: float = 0.0
    detected_s: float = 0.0
    spoken: bool = True
    why: str = ""
