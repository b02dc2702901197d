"""Who the bot answers: the attention policy on the user's finished transcripts, for every mode and transport.

``attention.respond_to``:

* ``all`` — every utterance is answered (the default, as before).
* ``addressed`` — only when spoken to: the persona's name or one of its wake words, as a whole word,
  anywhere in the turn ("what time is it, Nova?" releases the words held before the name). The name alone
  ("Nova," then a pause) is a wake word: it is not answered, and what the user says next within
  ``attention.follow_up_secs`` is addressed. For ``attention.follow_up_secs`` after the bot last spoke, a
  follow-up ("and tomorrow?") needs no name.
* ``relevant`` — the LLM decides per finished utterance whether the bot should speak (⟨Speak⟩/⟨Silent⟩),
  with its one-line reason; the name, a follow-up or a question aimed at the bot always pass, so the model
  is only asked about the rest. A judge that fails or is too slow (``attention.judge_timeout_secs``) keeps
  the bot silent: unaddressed speech is not answered by default.

Every decision is an :class:`AttentionDecisionFrame` that the turn tracker writes to the audit log
(``attention.decision``: speak or silent, why, the text, the turn's audio span). Transcripts that are not
answered never reach the LLM but are still heard (the tracker saw them leave STT). The gate also tells the
input transport about each decision with an upstream :class:`ReplyDecisionFrame` (Discord's floor control).
Acknowledging a sound cue ("thanks, I know") mutes that cue for a while and is not answered.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pipecat.frames.frames import BotStoppedSpeakingFrame, Frame, SystemFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import AttentionDecisionFrame, ends_user_turn

RespondTo = Literal["all", "addressed", "relevant"]
RESPOND_TO: tuple[RespondTo, ...] = ("all", "addressed", "relevant")
Reason = Literal["all", "addressed", "follow-up", "wake", "relevant", "not-addressed", "irrelevant", "undecided",
                 "acknowledged", "empty"]

ACK_RE = re.compile(r"\b(thanks?|thank you|i know|i'?m aware|got it|it'?s fine|it'?s ok(?:ay)?|never ?mind|"
                    r"stop (?:warning|telling)|i hear it)\b", re.I)


@dataclass
class ReplyDecisionFrame(SystemFrame):
    """Upstream, to the input transport: a transcript was heard and will (``reply=True``) or will not be
    answered (Discord's floor control keeps the floor for a reply that is coming)."""

    reply: bool = False
    speaker: str = ""


def _name_pattern(name: str) -> re.Pattern[str] | None:
    words = re.findall(r"[\w']+", name.lower())
    if not words:
        return None
    return re.compile(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b", re.I)


def wake_names(persona) -> list[str]:
    """The names a persona answers to: its name and its wake words."""
    return [n for n in [persona.name, *persona.wake_words] if n and n.strip()]


def is_addressed(text: str, names: Iterable[str]) -> bool:
    """Whether ``text`` names the bot (case-insensitive, whole words; "Nova" is not in "Casanova")."""
    return any(p.search(text) for p in filter(None, map(_name_pattern, names)))


def only_names(text: str, names: Iterable[str]) -> bool:
    """``text`` is nothing but the bot's name(s) and filler ("Nova.", "hey Nova", "okay computer?")."""
    rest = text
    for p in filter(None, map(_name_pattern, names)):
        rest = p.sub(" ", rest)
    return not [w for w in re.findall(r"[\w']+", rest.lower()) if w not in WAKE_FILLER]


WAKE_FILLER = frozenset({"hey", "ok", "okay", "oh", "um", "uh", "so", "yo"})


@dataclass
class AttentionState:
    """Shared by the gate and the cue speaker of one session."""

    last_bot_speech: float | None = None
    """monotonic time the bot last stopped speaking."""
    last_wake: float | None = None
    """monotonic time the user last said only the bot's name ("Nova, ... what time is it?"): what they say
    next, within the follow-up window, is addressed to the bot."""
    last_cue_alert: float | None = None
    muted_cues: dict[str, float] = field(default_factory=dict)
    """cue -> monotonic time until which it is acknowledged (not announced)."""
    last_cue: str | None = None

    def cue_muted(self, cue: str, now: float) -> bool:
        return self.muted_cues.get(cue, 0.0) > now


Judge = Callable[[str], Awaitable[tuple[bool, str]]]
"""An utterance -> (speak?, one-line reason)."""


class AttentionGate(FrameProcessor):
    """Lets through the transcripts the bot should answer (``SessionHooks.on_transcript``). See the module
    docstring. Within one user turn, the first transcript that passes also releases those held before it."""

    def __init__(self, respond_to: RespondTo, names: Iterable[str], *, follow_up_secs: float = 8.0,
                 judge: Judge | None = None, judge_timeout_secs: float = 2.0, state: AttentionState | None = None,
                 ack_mute_secs: float = 600.0, ack_window_secs: float = 30.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if respond_to not in RESPOND_TO:
            raise ValueError(f"respond_to must be one of {', '.join(RESPOND_TO)}, got {respond_to!r}")
        if respond_to == "relevant" and judge is None:
            raise ValueError("respond_to = relevant needs a judge")
        self.respond_to = respond_to
        self.names = [n for n in names if n and n.strip()]
        self.follow_up_secs = follow_up_secs
        self.judge = judge
        self.judge_timeout_secs = judge_timeout_secs
        self.state = state or AttentionState()
        self.ack_mute_secs = ack_mute_secs
        self.ack_window_secs = ack_window_secs
        self._held: list[TranscriptionFrame] = []
        self._passing = False
        self.passed = 0
        self.dropped = 0

    def _new_turn(self) -> None:
        self.dropped += len(self._held)
        self._held = []
        self._passing = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self.state.last_bot_speech = time.monotonic()
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._transcript(frame)
            return
        if ends_user_turn(frame):
            self._new_turn()
        await self.push_frame(frame, direction)

    async def decide(self, text: str) -> tuple[bool, Reason, str]:
        now = time.monotonic()
        if not text.strip():
            return False, "empty", ""
        if self._acknowledges_cue(text, now):
            cue = self.state.last_cue or ""
            self.state.muted_cues[cue] = now + self.ack_mute_secs
            return False, "acknowledged", f"{cue} muted for {self.ack_mute_secs:g} s"
        if self.respond_to == "all":
            return True, "all", ""
        if self._passing:
            return True, "addressed", "same turn"
        if is_addressed(text, self.names):
            if only_names(text, self.names) and not self._held:  # "Nova," then a pause: listen for the rest
                self.state.last_wake = now
                return False, "wake", "listening for the rest"
            return True, "addressed", ""
        wake = self.state.last_wake
        if wake is not None and now - wake <= self.follow_up_secs:
            self.state.last_wake = None
            return True, "addressed", f"{now - wake:.1f} s after the name was said"
        last = self.state.last_bot_speech
        if last is not None and now - last <= self.follow_up_secs:
            return True, "follow-up", f"{now - last:.1f} s after the bot spoke"
        if self.respond_to == "addressed":
            return False, "not-addressed", ""
        assert self.judge is not None
        try:
            speak, why = await asyncio.wait_for(self.judge(text), timeout=self.judge_timeout_secs)
        except Exception as exc:  # noqa: BLE001 - a judge that fails keeps the bot silent
            return False, "undecided", f"judge failed: {type(exc).__name__}"
        return (True, "relevant", why) if speak else (False, "irrelevant", why)

    def _acknowledges_cue(self, text: str, now: float) -> bool:
        last = self.state.last_cue_alert
        return last is not None and now - last <= self.ack_window_secs and bool(ACK_RE.search(text))

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        speak, reason, detail = await self.decide(frame.text)
        await self.push_frame(AttentionDecisionFrame(decision="speak" if speak else "silent", reason=reason,
                                                     text=frame.text, detail=detail))
        await self.push_frame(ReplyDecisionFrame(reply=speak, speaker=frame.user_id), FrameDirection.UPSTREAM)
        if not speak:
            self._held.append(frame)
            return
        self._passing = True
        for held in self._held:
            await self.push_frame(held, FrameDirection.DOWNSTREAM)
            self.passed += 1
        self._held = []
        await self.push_frame(frame, FrameDirection.DOWNSTREAM)
        self.passed += 1


JUDGE_PROMPT = (
    "You are {name}, a voice assistant in a room where people also talk among themselves. Decide if {name} "
    "should reply to the last thing said. Reply only when it is said to you, is a question or request you can "
    "help with, or needs a warning; stay silent when people talk to each other. Answer with SPEAK or SILENT, "
    "then a colon and at most eight words why.\nSaid: \"{text}\"\nAnswer:")


def llm_judge(chat, name: str, max_tokens: int = 16) -> Judge:
    """A :data:`Judge` over the session's chat backend (:class:`bot.services.llm.ChatClient`)."""

    async def judge(text: str) -> tuple[bool, str]:
        stream = await chat.client.chat.completions.create(
            model=chat.model, stream=True, max_tokens=max_tokens, temperature=0.0,
            messages=[{"role": "user", "content": JUDGE_PROMPT.format(name=name, text=text.replace('"', "'"))}])
        out = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                out += chunk.choices[0].delta.content
        head, _, why = out.strip().partition(":")
        return head.strip().upper().startswith("SPEAK"), why.strip()[:120] or out.strip()[:120]

    return judge
