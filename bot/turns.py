"""Turn tracking: watches the frames of a running pipeline and turns them into turns.

A :class:`TurnTracker` is a pipecat observer. It never changes the flow of frames; it records when
each stage of a turn happened on the session timeline (seconds since the input started, the same
timeline as ``reply.wav``) and what was heard, generated and actually played. Each finished
:class:`Turn` is handed to the listeners (the console printer, the audit log).

Staged events (in the spirit of Home Assistant's assist pipeline) are also emitted to listeners as
``(type, data)`` pairs while the turn runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from bot.frames import (AttentionDecisionFrame, AuditEventFrame, BotSentenceFrame, ContextTrimmedFrame,
                        CueAlertFrame, FalseInterruptionFrame, InputRefusedFrame, ModerationVerdictFrame,
                        ReplyWithheldFrame, SpeakerFrame, TurnFailedFrame, TurnResumedFrame, TurnTimingFrame,
                        UserTurnHeldFrame)
from bot.text_split import split_sentences


Modality = Literal["voice", "text"]
"""How the user's side of a turn came in: spoken (heard through a transport) or typed (``voicebot chat``,
Discord text messages, see :mod:`bot.text_chat`). Recorded in every ``turn`` record of the audit log."""


class AnchoredClock(SystemClock):
    """pipecat's system clock, remembering when it started so frame timestamps can be placed on the
    session timeline."""

    started_ns = 0

    def start(self) -> None:
        super().start()
        self.started_ns = self._time


@dataclass
class Turn:
    index: int
    speaker: str = "user"
    modality: Modality = "voice"
    vad_start: float | None = None
    vad_stop: float | None = None
    speech_start: float | None = None
    speech_end: float | None = None
    """Estimated last voiced input sample: VAD stop minus the VAD's stop delay."""
    transcripts: list[str] = field(default_factory=list)
    t_transcript: float | None = None
    t_llm_start: float | None = None
    t_llm_first_text: float | None = None
    t_llm_end: float | None = None
    llm_text: str = ""
    t_first_sentence: float | None = None
    """When the first complete sentence of the reply was ready for TTS (after output moderation)."""
    t_tts_start: float | None = None
    t_tts_first_audio: float | None = None
    t_bot_start: float | None = None
    t_bot_stop: float | None = None
    to_speak: list[str] = field(default_factory=list)
    """Texts this turn sent to TTS (approved sentences, refusal, greeting): how played text is matched to
    its turn when replies of several turns play back to back."""
    queued: list[str] = field(default_factory=list)
    """Sentences handed to the speaker, in order."""
    played: list[str] = field(default_factory=list)
    """Sentences the speaker reported as played (pipecat releases them after their audio)."""
    interrupted: bool = False
    refused: bool = False
    failed: bool = False
    """The turn could not be answered; the persona's fallback line was spoken instead."""
    input_verdict: dict[str, Any] | None = None
    output_verdicts: list[dict[str, Any]] = field(default_factory=list)
    generated_sentences: list[str] = field(default_factory=list)
    withheld: list[dict[str, Any]] = field(default_factory=list)
    """Pieces not said because they restate the persona's instructions: ``{index, text, reason}``."""
    errors: list[str] = field(default_factory=list)
    extra_timings: dict[str, float] = field(default_factory=dict)
    """Timings reported by a stage with a TurnTimingFrame (e.g. realtime hold-back), in ms."""
    withdrawn: list[dict[str, Any]] = field(default_factory=list)
    """Answers to this turn that were withdrawn because the user went on talking after the turn had ended
    (``{generated, heard, spoken, gap_s}``: ``heard`` whether its audio had started, ``spoken`` the sentences
    played to the end): the turn was continued and answered again as a whole."""

    initiated_by: str | None = None
    """A turn the bot started on its own, and why (``greeting``, ``cue:smoke-alarm``): it has no user part."""
    resumes: int | None = None
    """This turn's reply is the rest of turn ``resumes``'s answer, which a sound with no words (this turn)
    had cut off: a false interruption."""

    def withdraw_answer(self, gap_secs: float) -> dict[str, Any]:
        """The user went on: forget the answer in flight (recorded in ``withdrawn``) so the continued turn
        is answered, timed and audited afresh."""
        record = {"generated": self.generated, "heard": self.t_bot_start is not None,
                  "spoken": " ".join(x.strip() for x in self.played if x.strip()), "gap_s": round(gap_secs, 3)}
        self.withdrawn.append(record)
        self.t_llm_start = self.t_llm_first_text = self.t_llm_end = self.t_first_sentence = None
        self.t_tts_start = self.t_tts_first_audio = self.t_bot_start = self.t_bot_stop = None
        self.llm_text = ""
        self.to_speak, self.queued, self.played = [], [], []
        self.generated_sentences, self.output_verdicts = [], []
        self.interrupted = self.refused = False
        self.extra_timings = {}
        return record

    @property
    def awaiting_playback(self) -> bool:
        """A reply (or refusal) was asked for and has not finished playing."""
        return (self.t_llm_start is not None or self.refused or self.failed) and self.t_bot_stop is None

    @property
    def transcript(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())

    @property
    def generated(self) -> list[str]:
        """Sentences the LLM produced (as checked by moderation when it runs, else split here)."""
        return self.generated_sentences or split_sentences(self.llm_text)

    @property
    def spoken(self) -> list[str]:
        """What the user heard: every queued sentence, unless a barge-in cut playback short, in which case
        only the sentences whose audio was played to the end (the cut one is not counted)."""
        return self.played if self.interrupted else (self.queued or self.played)

    @property
    def spoken_text(self) -> str:
        return " ".join(s.strip() for s in self.spoken if s.strip())

    def timings(self) -> dict[str, float | None]:
        """Stage durations in ms, each from one event of this turn to a later one (see README's timing
        table). A stage whose end is not after its start is reported as None, never as a negative time."""

        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None or b < a else round((b - a) * 1000.0, 1)

        return {
            "stt_ms": ms(self.vad_stop, self.t_transcript),
            "llm_ttft_ms": ms(self.t_llm_start, self.t_llm_first_text),
            "first_sentence_ms": ms(self.t_llm_start, self.t_first_sentence),
            "tts_ttfa_ms": ms(self.t_tts_start, self.t_tts_first_audio),
            "v2v_ms": ms(self.speech_end, self.t_bot_start),
            "end_of_turn_ms": ms(self.speech_end, self.t_llm_start),
            **self.extra_timings,
        }

    def summary(self) -> dict[str, Any]:
        """The ``turn`` record of the audit log (audio refs are added by the audit writer)."""
        return {
            "turn": self.index,
            "speaker": self.speaker,
            "modality": self.modality,
            "user": None if self.index == 0 or self.initiated_by else {
                "transcript": self.transcript, "audio": None,
                "start_s": _r(self.speech_start), "end_s": _r(self.speech_end)},
            "input_verdict": self.input_verdict,
            "generated": self.generated,
            "output_verdicts": self.output_verdicts,
            "withheld": list(self.withheld),
            "spoken": self.spoken_text,
            "interrupted": self.interrupted,
            "refused": self.refused,
            "failed": self.failed,
            "bot_audio": None,
            "bot": {"start_s": _r(self.t_bot_start), "end_s": _r(self.t_bot_stop)},
            "timings": self.timings(),
            "withdrawn": list(self.withdrawn),
            **({"resumes": self.resumes} if self.resumes is not None else {}),
            **({"initiated_by": self.initiated_by} if self.initiated_by and self.index else {}),
            "errors": list(self.errors),
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


TurnListener = Callable[[Turn], None]
EventListener = Callable[[str, dict[str, Any]], None]


class TurnTracker(BaseObserver):
    """Builds :class:`Turn` records from the frames flowing through the pipeline."""

    def __init__(self, clock: AnchoredClock, session_t0: Callable[[], float | None], *,
                 vad_start_secs: float, vad_stop_secs: float) -> None:
        super().__init__()
        self._clock = clock
        self._session_t0 = session_t0
        self._vad_start_secs = vad_start_secs
        self._vad_stop_secs = vad_stop_secs
        self.turns: list[Turn] = []
        self.current: Turn | None = None
        self.turn_listeners: list[TurnListener] = []
        self.event_listeners: list[EventListener] = []
        self.errors: list[str] = []
        self.user_speaking = False
        self.bot_speaking = False
        self.llm_running = False
        self.last_activity = 0.0
        self._turn_count = 0
        self.current_speaker = "user"
        """Label of whoever the input is from now (a multi-speaker transport says so with a SpeakerFrame)."""
        self.speaking: Turn | None = None
        """The turn whose answer is playing right now."""
        self.resume_listeners: list[Callable[[list[str]], None]] = []
        """Called with the sentences to speak again when a false interruption is undone (the session
        queues them for TTS)."""
        self._cut: tuple[Turn, list[str]] | None = None
        """The answer the last barge-in cut off, and its sentences not played to the end."""
        self._stale_answer = False
        """A withdrawn answer may still be flushing out (its end, its last audio): until the next answer
        starts, its frames are not counted for the turn that continues."""

    # -- time -------------------------------------------------------------------------------------

    def session_time(self, data: FramePushed) -> float:
        """Session seconds at which the frame was pushed."""
        t0 = self._session_t0()
        if t0 is None:
            return 0.0
        return (self._clock.started_ns + data.timestamp) / 1e9 - t0

    # -- events -----------------------------------------------------------------------------------

    def emit(self, kind: str, **data: Any) -> None:
        for listener in self.event_listeners:
            listener(kind, data)

    def _finish(self, turn: Turn | None) -> None:
        if turn is None or turn not in self.turns:
            return
        self.turns.remove(turn)
        if self.current is turn:
            self.current = None
        if self.speaking is turn:
            self.speaking = None
        if not turn.transcript and turn.t_llm_start is None and not turn.queued:
            return  # noise the VAD took for speech, no words and no reply: not a turn
        for listener in self.turn_listeners:
            listener(turn)

    def _new_turn(self, t: float) -> Turn:
        if self.current is not None and not self.current.awaiting_playback:
            self._finish(self.current)  # a turn whose answer is still to be played ends when playback does
        self._turn_count += 1
        turn = Turn(index=self._turn_count, speaker=self.current_speaker, vad_start=t,
                    speech_start=max(0.0, t - self._vad_start_secs))
        self.turns.append(turn)
        self.current = turn
        return turn

    def _owner_of(self, text: str, *, played: bool) -> Turn | None:
        """The turn a spoken text belongs to: the oldest open turn that sent it to TTS and has not yet
        had it queued (or played); else the turn being played or answered."""
        key = text.strip()
        for turn in self.turns:
            done = turn.played if played else turn.queued
            if sum(t.strip() == key for t in turn.to_speak) > sum(t.strip() == key for t in done):
                return turn
        return self.speaking or self._answering()

    def greeting(self, text: str) -> None:
        """The bot is about to speak first (the persona's greeting): that is turn 0, with no user part."""
        turn = Turn(index=0, speaker="bot", t_llm_start=0.0, t_llm_end=0.0, generated_sentences=[text],
                    to_speak=[text])
        self.turns.append(turn)
        self.current = turn

    def bot_initiated(self, text: str, why: str, t: float) -> Turn:
        """The bot speaks up on its own (a sound cue): a turn of its own in the same sequence, with no user
        part, whose reply is ``text``."""
        if self.current is not None and not self.current.awaiting_playback:
            self._finish(self.current)
        self._turn_count += 1
        turn = Turn(index=self._turn_count, speaker="bot", t_llm_start=t, t_llm_end=t, generated_sentences=[text],
                    to_speak=[text], initiated_by=why)
        self.turns.append(turn)
        self.current = turn
        self.last_activity = time.monotonic()
        return turn

    def text_turn(self, speaker: str, text: str) -> Turn:
        """A typed turn (:mod:`bot.text_chat`): numbered in the same sequence as the spoken ones. It is not
        tracked from frames; :meth:`finish_text_turn` hands it to the listeners once answered."""
        self._turn_count += 1
        self.last_activity = time.monotonic()
        return Turn(index=self._turn_count, speaker=speaker, modality="text", transcripts=[text])

    def finish_text_turn(self, turn: Turn) -> None:
        self.last_activity = time.monotonic()
        for listener in self.turn_listeners:
            listener(turn)

    def _answering(self) -> Turn | None:
        """The turn the bot is answering: the latest one the LLM was asked about, else the current one."""
        asked = [x for x in self.turns if x.t_llm_start is not None]
        return asked[-1] if asked else self.current

    def cut_off(self) -> None:
        """The bot's speech was cut (a barge-in, or the session stopped while it talked): the turn being
        spoken is marked interrupted, with what had been played."""
        turn = self.speaking
        if turn is not None and self.bot_speaking and not turn.interrupted:
            turn.interrupted = True
            self.emit("bot.interrupted", turn=turn.index, spoken_text=turn.spoken_text)

    def finish_all(self) -> None:
        for turn in list(self.turns):
            self._finish(turn)

    def note_error(self, message: str) -> None:
        self.errors.append(message)
        if self.current is not None:
            self.current.errors.append(message)
        self.emit("error", turn=self.current.index if self.current else None, message=message)

    # -- observer ---------------------------------------------------------------------------------

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, TTSTextFrame):
            # TTS queues a sentence's text behind its audio at the output transport, which releases it
            # once that audio has been played.
            turn = self._owner_of(frame.text, played=isinstance(data.source, BaseOutputTransport))
            if turn is not None:
                if isinstance(data.source, BaseOutputTransport):
                    turn.played.append(frame.text)
                elif isinstance(data.destination, BaseOutputTransport):
                    turn.queued.append(frame.text)
            return
        if not data.first_push:
            return
        if isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame, BotStartedSpeakingFrame,
                              BotStoppedSpeakingFrame)) and data.direction != FrameDirection.DOWNSTREAM:
            return  # these are broadcast both ways as two frames: count each event once
        if isinstance(frame, AuditEventFrame):
            self.emit(frame.kind, **frame.data)
            return
        if isinstance(frame, AttentionDecisionFrame):
            turn = self.current
            self.emit("attention.decision", turn=turn.index if turn else None, decision=frame.decision,
                      reason=frame.reason, text=frame.text, detail=frame.detail,
                      start_s=_r(turn.speech_start) if turn else None, end_s=_r(turn.speech_end) if turn else None)
            return
        if isinstance(frame, CueAlertFrame):
            t_now = self.session_time(data)
            turn = self.bot_initiated(frame.text, f"cue:{frame.cue}", t_now) if frame.spoken else None
            self.emit("attention.cue", turn=turn.index if turn else None, cue=frame.cue, spoken=frame.spoken,
                      text=frame.text, why=frame.why, onset_s=frame.onset_s, detected_s=frame.detected_s,
                      t=_r(t_now))
            return
        if isinstance(frame, SpeakerFrame):
            self.current_speaker = frame.speaker or "user"  # turns that start from now on are theirs
            return
        t = self.session_time(data)
        if self._stale_answer:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._stale_answer = False
            elif isinstance(frame, BotStartedSpeakingFrame):
                self.bot_speaking = True  # the withdrawn answer's last audio: not the continued turn's answer
                return
            elif isinstance(frame, (LLMTextFrame, LLMFullResponseEndFrame, TTSStartedFrame, TTSAudioRawFrame,
                                    BotSentenceFrame, TurnTimingFrame)) or \
                    (isinstance(frame, ModerationVerdictFrame) and frame.stage == "output"):
                if isinstance(frame, LLMFullResponseEndFrame):
                    self.llm_running = False
                return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.user_speaking = True
            turn = self.current
            if turn is None or turn.t_llm_start is not None or turn.t_bot_start is not None \
                    or turn.speaker != self.current_speaker:
                turn = self._new_turn(t)
            self.emit("user.started_speaking", turn=turn.index, t=_r(t))
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self.user_speaking = False
            if self.current is not None:
                self.current.vad_stop = t
                self.current.speech_end = max(0.0, t - self._vad_stop_secs)
                self.emit("user.stopped_speaking", turn=self.current.index, t=_r(t))
        elif isinstance(frame, TranscriptionFrame):
            self._cut = None  # words: the barge-in was real, nothing is resumed
            turn = self.current or self._new_turn(t)
            turn.transcripts.append(frame.text)
            turn.t_transcript = t
            self.emit("stt.final", turn=turn.index, text=frame.text)
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._cut = None
            self.llm_running = True
            if self.current is not None and self.current.t_llm_start is None:
                self.current.t_llm_start = t
        elif isinstance(frame, LLMTextFrame) and self._answering() is not None:
            turn = self._answering()
            if turn.t_llm_first_text is None:
                turn.t_llm_first_text = t
            turn.llm_text += frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.llm_running = False
            turn = self._answering()
            if turn is not None:
                turn.t_llm_end = t
                if not turn.llm_text.strip() and not turn.refused and not turn.failed and turn.t_bot_start is None:
                    self._finish(turn)  # the model had nothing to say
        elif isinstance(frame, TTSStartedFrame):
            # TTS speaks the reply being answered, which is not the current turn once the user has
            # started another one meanwhile.
            turn = self._answering()
            if turn is not None and turn.t_tts_start is None:
                turn.t_tts_start = t
        elif isinstance(frame, TTSAudioRawFrame):
            turn = self._answering()
            if turn is not None and turn.t_tts_start is not None and turn.t_tts_first_audio is None:
                turn.t_tts_first_audio = t
        elif isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
            # Replies play in the order they were asked for: the oldest one not yet played starts now.
            waiting = [x for x in self.turns if x.awaiting_playback and x.t_bot_start is None]
            turn = waiting[0] if waiting else self._answering()
            self.speaking = turn
            if turn is not None and turn.t_bot_start is None:
                turn.t_bot_start = t
                self.emit("bot.started_speaking", turn=turn.index, t=_r(t))
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
            turn, self.speaking = self.speaking, None
            if turn is not None:
                turn.t_bot_stop = t
                self.emit("bot.stopped_speaking", turn=turn.index, t=_r(t))
                # A resumed answer is spoken sentence by sentence, with a stop between each: it is over
                # when all of them have played.
                resumed_pending = turn.resumes is not None and len(turn.played) < len(turn.to_speak)
                if turn.interrupted or turn.index == 0 or (turn.t_llm_end is not None and not resumed_pending) or \
                        ((turn.refused or turn.failed) and turn.t_llm_start is None):
                    self._finish(turn)
            # Replies that played back to back with this one, without a pause, have finished too.
            for other in list(self.turns):
                if other.t_llm_end is not None and other.to_speak and len(other.played) >= len(other.to_speak):
                    other.t_bot_stop = other.t_bot_stop or t
                    self._finish(other)
        elif isinstance(frame, InterruptionFrame):
            turn = self.speaking
            if turn is not None and self.bot_speaking and not turn.interrupted:
                self._cut = (turn, turn.to_speak[len(turn.played):])
                self.cut_off()
            # Replies that had not started playing are cancelled by the interruption: they never will.
            # (Not the greeting: queued as the session starts, it can reach TTS after this interruption.)
            for older in [x for x in self.turns if x is not self.current and x is not turn and x.index > 0]:
                if older.awaiting_playback and older.t_bot_start is None:
                    older.interrupted = True
                    self._finish(older)
        elif isinstance(frame, ModerationVerdictFrame):
            turn = self.current if frame.stage == "input" else self._answering()
            if turn is not None:
                record = {"text": frame.text, **({"index": frame.index} if frame.index is not None else {}),
                          **frame.verdict}
                if frame.stage == "input":
                    turn.input_verdict = record
                else:
                    turn.output_verdicts.append(record)
            self.emit("moderation.verdict", turn=turn.index if turn else None, stage=frame.stage,
                      text=frame.text, verdict=frame.verdict)
        elif isinstance(frame, BotSentenceFrame):
            turn = self._answering()
            if turn is not None:
                if turn.t_first_sentence is None:
                    turn.t_first_sentence = t
                turn.generated_sentences.append(frame.text)
                if frame.fate == "spoken":
                    turn.to_speak.append(frame.text)
                if frame.fate == "blocked":
                    turn.refused = True
                    turn.to_speak.append(frame.spoken_instead)
                if frame.fate == "withheld":
                    turn.withheld.append({"index": frame.index, "text": frame.text, "reason": frame.reason})
            self.emit("llm.sentence", turn=turn.index if turn else None, index=frame.index, text=frame.text,
                      fate=frame.fate, **({"reason": frame.reason} if frame.reason else {}))
        elif isinstance(frame, ReplyWithheldFrame):
            turn = self._answering()
            if turn is not None and turn.t_bot_start is None and not turn.refused:
                self._finish(turn)  # nothing of the reply may be said: the turn is over
        elif isinstance(frame, TurnResumedFrame):
            if data.direction == FrameDirection.UPSTREAM:  # broadcast as two frames: count it once
                self._resume(frame)
        elif isinstance(frame, FalseInterruptionFrame):
            if data.direction == FrameDirection.UPSTREAM:
                self._false_interruption(t)
        elif isinstance(frame, TurnTimingFrame):
            turn = self._answering()
            if turn is not None:
                turn.extra_timings.update(frame.timings)
        elif isinstance(frame, UserTurnHeldFrame):
            # A transcript processor (e.g. Discord's reply gate) let none of this turn through: it is heard, not
            # answered, and what the user says next is a turn of its own.
            turn = self.current
            if turn is not None and turn.t_llm_start is None and not turn.refused and turn.index > 0:
                self._finish(turn)
        elif isinstance(frame, InputRefusedFrame):
            if self.current is not None:
                self.current.refused = True
                self.current.to_speak.append(frame.refusal)
        elif isinstance(frame, ContextTrimmedFrame):
            turn = self.current or self._answering()
            self.emit("llm.context_trimmed", turn=turn.index if turn else None, **frame.data)
        elif isinstance(frame, TurnFailedFrame):
            turn = self.current or self._answering()
            if not frame.reported:
                self.note_error(frame.reason)
            if turn is not None:
                turn.failed = True
                if frame.fallback:
                    turn.to_speak.append(frame.fallback)
            self.emit("turn.failed", turn=turn.index if turn else None, reason=frame.reason,
                      fallback=frame.fallback)
        elif isinstance(frame, ErrorFrame):
            self.note_error(str(frame.error))
        else:
            return
        self.last_activity = time.monotonic()

    def _resume(self, frame: TurnResumedFrame) -> None:
        """The user went on after their turn had ended: the speech that just started (a new turn, opened
        by the VAD) joins the turn being answered, whose answer is withdrawn."""
        resumed = self.current
        previous = next((x for x in reversed(self.turns) if x is not resumed and x.index > 0
                         and x.speaker == self.current_speaker), None)
        if previous is None:
            return
        if resumed is not None and resumed is not previous:
            if resumed.transcripts or resumed.t_llm_start is not None:
                return  # not the fresh turn of the speech that just started: nothing to join
            self.turns.remove(resumed)
            self._turn_count -= 1  # its number is not used: the speech belongs to `previous`
        if self.speaking is previous:
            self.speaking = None  # its playback is being cut: not a barge-in on an answer that stands
        self._cut = (previous, previous.to_speak[len(previous.played):])
        record = previous.withdraw_answer(frame.gap_secs)
        previous.t_transcript = None
        self.current = previous
        self._stale_answer = True
        self.emit("answer.withdrawn", turn=previous.index, reason="user_resumed", transcript=previous.transcript,
                  **record)

    def _false_interruption(self, t: float) -> None:
        """The sound that cut the bot off had no words: the turn of that sound (or the turn it seemed to
        continue) speaks the rest of the cut answer, from the sentence that was cut."""
        cut, self._cut = self._cut, None
        turn = self.current
        if cut is None or not cut[1] or turn is None:
            return
        of_turn, rest = cut
        turn.to_speak = list(rest)
        turn.resumes = of_turn.index
        turn.t_llm_start = turn.t_llm_end = t  # the reply is released now; no LLM ran for it
        self._stale_answer = False
        self.emit("answer.resumed", turn=turn.index, of_turn=of_turn.index, text=" ".join(rest))
        for listener in self.resume_listeners:
            listener(list(rest))

    @property
    def busy(self) -> bool:
        """Whether a turn is still in flight (user talking, model thinking or bot talking)."""
        return self.user_speaking or self.bot_speaking or self.llm_running
