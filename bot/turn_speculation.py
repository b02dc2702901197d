"""Answer while waiting: the reply is prepared during the end-of-turn wait and held until the turn ends.

With ``vad.turn = "silence"`` a turn ends ``vad.turn_timeout_secs`` after the VAD stop, so the user can
pause and go on. That wait used to be dead time: the LLM started only once it was over. With
``vad.speculate`` (the default) the LLM starts as soon as the turn's transcript is in, on a
provisional copy of the context, through pipecat's speculation path: the LLM service holds the
response (:class:`pipecat.turns.speculation_gate.SpeculationGate`) until the turn really ends and
discards it if the user goes on talking. Nothing is spoken or written to the context before the
turn ends, so what the user hears is the same as without speculation, only sooner.

Input moderation stays in front: the input gate checks the speculated text and approves it
(:meth:`SpeculativeSilenceStop.approve`). The turn end only keeps a speculative answer whose text
was approved and is still the whole turn; otherwise the speculation is withdrawn and the turn is
answered (or refused) the ordinary way, so a slow or refusing check never lets an unchecked turn
through.

A pause is not always the end (:mod:`bot.turn_completion`): when the transcript so far ends on a clause
break, a conjunction, a preposition, an article or a filler ("And so, my fellow Americans,"), the turn
waits ``vad.unfinished_wait_secs`` longer (once per pause); the answer is still prepared during that wait.
A finished question ends at the ordinary speed.

A false end of turn (the turn ended, but the user goes on within ``vad.resume_secs`` of the end of their
speech, while its answer is being prepared or has just started playing) is undone: a :class:`~bot.frames.TurnResumedFrame` tells
turn tracking to join the new speech to that turn and audit the withdrawn answer, the barge-in cuts its
playback, and the withdrawn answer is removed from the LLM context before the joined turn is answered.

A false interruption (the bot was cut off by a sound with no words: a cough, a door) is undone too: when
the STT reports no words in that sound (:class:`~bot.frames.NoWordsFrame`), a
:class:`~bot.frames.FalseInterruptionFrame` has turn tracking resume what was cut, from the sentence it
was in, and the empty user turn is closed. (A timer would not do: on a loaded CPU a transcript can come
seconds after the speech, and real words would be taken for noise.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

from bot.frames import FalseInterruptionFrame, NoWordsFrame, SpeakerFrame, TurnResumedFrame
from bot.turn_completion import judge


def speculated_text(context: LLMContext) -> str:
    """The turn text a speculative request answers: pipecat's aggregator appends it to a provisional
    copy of the context as the last message. It is what :meth:`SpeculativeSilenceStop.is_live` takes."""
    messages = context.get_messages()
    content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    return content if isinstance(content, str) else ""


class SpeculativeSilenceStop(SpeechTimeoutUserTurnStopStrategy):
    """Silence end of turn that starts the answer on the transcript and confirms it at the turn end.

    Args:
        needs_approval: the speculated text must be approved (by the input moderation gate) before a
            turn end may keep the speculative answer.
        voice_onset: returns True while the VAD hears speech it has not confirmed yet (it needs
            ``vad.start_secs`` of it). The turn is not ended then: a user who resumes after a short
            pause ("Hello there, [0.3 s] who are you?") would otherwise be cut off during the
            confirmation. If the onset was only a noise, the wait runs once more and the turn ends.
        unfinished_wait_secs: extra wait when the transcript sounds unfinished (0 = off).
        resume_secs: speech that starts this soon after the end of the speech of a turn that has ended
            continues that turn (0 = off). Measured from the speech, not from the turn end, so that a turn
            end delayed by a slow CPU does not stretch the window.
        context: the LLM context, from which a withdrawn answer is removed when its turn is continued.
        resume_after_noise: when the speech that cut the bot off holds no words (the STT says so), the
            bot resumes what was cut.
        acoustic: a turn analyzer (Smart-Turn v3) asked, when the transcript sounds finished, whether the
            voice does too; if it says the turn is incomplete, the turn waits ``unfinished_wait_secs``
            as for an unfinished clause. It runs from the VAD stop, during the ordinary wait.
    """

    def __init__(self, *, needs_approval: bool = False, voice_onset: Callable[[], bool] | None = None,
                 unfinished_wait_secs: float = 0.0, resume_secs: float = 0.0, context: LLMContext | None = None,
                 resume_after_noise: bool = False, acoustic: BaseTurnAnalyzer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._needs_approval = needs_approval
        self._voice_onset = voice_onset
        self._unfinished_wait = unfinished_wait_secs
        self._resume_secs = resume_secs
        self._context = context
        self._hold_task: asyncio.Task | None = None
        self._held = False
        """This pause already got its extra wait (one per pause keeps the wait bounded)."""
        self._ended: tuple[float, str, str] | None = None
        """(monotonic time its speech ended, transcript, speaker) of the last turn that ended."""
        self._speech_ended = 0.0
        """When the VAD last said the user stopped (:meth:`_clock`)."""
        self._audio_secs = 0.0
        """Seconds of input audio that have passed through: the clock of the user's speech. On a loaded CPU
        frames are processed late and in bursts, so wall-clock gaps between VAD events are not the pauses
        the user made; the audio between them is."""
        self._speaker = "user"
        """Whose audio comes in now (a multi-speaker transport says so with a SpeakerFrame): only the same
        speaker can continue a turn."""
        self._resuming = False
        """This turn continues the previous one: its withdrawn answer is still to leave the context."""
        self._resume_after_noise = resume_after_noise
        self._acoustic = acoustic
        self._acoustic_task: asyncio.Task | None = None
        self._bot_speaking = False
        self._cut_bot = False
        """This turn cut the bot off (a barge-in, or a continued turn): if it holds no words, resume."""
        self._speculation: UserTurnSpeculation | None = None
        self._approved: str | None = None
        self._kept: str | None = None
        self._segments: list[str] = []

    # Called by the input moderation gate, on the same event loop.
    def is_live(self, text: str) -> bool:
        """Whether ``text`` is the speculation in flight or the one this turn's end kept (one withdrawn
        meanwhile is not)."""
        return (self._speculation is not None and self._speculation.text == text) or self._kept == text

    def approve(self, text: str) -> None:
        if self.is_live(text):
            self._approved = text

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            self._audio_secs += len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
            if self._acoustic is not None:
                self._acoustic.append_audio(frame.audio, self._vad_user_speaking)
        elif isinstance(frame, SpeakerFrame):
            self._speaker = frame.speaker or "user"
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._withdraw()  # the user goes on: the turn is not over
            await self._cancel_hold()
            await self._cancel_acoustic()
            if self._acoustic is not None:
                self._acoustic.update_vad_start_secs(frame.start_secs)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._segments.append(frame.text.strip())
            self._cut_bot = False  # words: a real barge-in
            if self._resuming:
                self._resuming = False
                self._drop_withdrawn_answer()
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_ended = self._clock()
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self._acoustic is not None:
            await self._cancel_acoustic()
            self._acoustic_task = self.task_manager.create_task(self._acoustic.analyze_end_of_turn(),
                                                                f"{self}::smart_turn")
        if isinstance(frame, NoWordsFrame) and self._cut_bot and self._resume_after_noise \
                and not self._segments and not self._vad_user_speaking:
            await self._false_interruption()
        result = await super().process_frame(frame)
        if isinstance(frame, TranscriptionFrame) and self._segments and self._vad_stopped \
                and not self._vad_user_speaking:
            # Still waiting for the turn to end (it would have ended inside super() otherwise, and
            # cleared the segments): answer this transcript now, held until the turn ends.
            await self._withdraw()
            self._speculation = UserTurnSpeculation(text=self._turn_text)
            await self.trigger_user_turn_inference_triggered(speculation=self._speculation)
        return result

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        if self._voice_onset is not None and self._voice_onset():
            await self._restart_user_speech_timer()  # the user may be going on: wait once more
            return
        if self._hold_task is not None:
            return  # the extra wait for an unfinished clause is running: it ends the turn
        if self._unfinished_wait > 0 and not self._held:
            judgement = judge(self._turn_text)
            reason = judgement.reason if judgement.unfinished else await self._acoustic_verdict()
            if reason is not None:
                self._held = True
                logger.debug(f"{self}: {self._turn_text!r} sounds unfinished ({reason}): "
                             f"waiting {self._unfinished_wait:.2f} s more")
                self._hold_task = self.task_manager.create_task(self._hold(self._unfinished_wait),
                                                                f"{self}::unfinished_wait")
                return
        speculation, self._speculation = self._speculation, None
        approved, self._approved = self._approved, None
        if speculation is not None:
            if speculation.text == self._turn_text and (approved == speculation.text or not self._needs_approval):
                self._kept = speculation.text
                await self.trigger_user_turn_finalized(enable_user_speaking_frames=enable_user_speaking_frames,
                                                       confirms_speculation=True)
                return
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    @property
    def _turn_text(self) -> str:
        return " ".join(self._segments)

    async def _hold(self, secs: float) -> None:
        try:
            await asyncio.sleep(secs)
        except asyncio.CancelledError:
            return
        self._hold_task = None  # before ending the turn, which cancels a running hold
        await self.trigger_user_turn_stopped()

    async def _false_interruption(self) -> None:
        self._cut_bot = self._resuming = False
        logger.debug(f"{self}: the sound that cut the bot off had no words: resuming")
        await self.broadcast_frame(FalseInterruptionFrame)
        await self.trigger_user_turn_stopped()  # close the empty turn (nothing is written or answered)

    def _clock(self) -> float:
        """Seconds on the input audio's timeline, or the monotonic clock where no audio passes here."""
        return self._audio_secs if self._audio_secs > 0 else time.monotonic()

    async def _acoustic_verdict(self) -> str | None:
        """"smart-turn" if the turn analyzer judged the speech so far unfinished, else None."""
        task, self._acoustic_task = self._acoustic_task, None
        if task is None:
            return None
        try:
            state, _ = await task
        except asyncio.CancelledError:
            return None
        return "smart-turn" if state == EndOfTurnState.INCOMPLETE else None

    async def _cancel_acoustic(self) -> None:
        task, self._acoustic_task = self._acoustic_task, None
        if task is not None:
            await self.task_manager.cancel_task(task)

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        if self._acoustic is not None:
            self._acoustic.set_sample_rate(setup.audio_in_sample_rate or 16000)

    async def _cancel_hold(self) -> None:
        self._held = False
        task, self._hold_task = self._hold_task, None
        if task is not None:
            await self.task_manager.cancel_task(task)

    def _drop_withdrawn_answer(self) -> None:
        """Remove what the assistant said after the user's last message: the withdrawn answer of the
        turn being continued (pipecat's assistant aggregator wrote the part that played when it was cut).
        Runs before this turn's text is answered, speculatively or not."""
        if self._context is None:
            return
        messages = self._context.get_messages()
        last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
                        default=None)
        if last_user is None:
            return
        kept = [m for i, m in enumerate(messages)
                if i <= last_user or not (isinstance(m, dict) and m.get("role") == "assistant")]
        if len(kept) != len(messages):
            self._context.set_messages(kept)

    async def handle_user_turn_started(self):
        await self._withdraw()
        await self._cancel_hold()
        self._kept = None
        self._segments = []
        self._cut_bot = self._bot_speaking
        await self._cancel_acoustic()
        if self._acoustic is not None:
            self._acoustic.clear()
        ended, self._ended = self._ended, None
        if ended is not None and self._resume_secs > 0 and ended[2] == self._speaker:
            gap = self._clock() - ended[0]
            if gap <= self._resume_secs:
                # A false end of turn: the user goes on. Broadcast (its upstream copy is pushed at once),
                # so turn tracking joins the turns before the barge-in that follows cuts the answer.
                self._resuming = self._cut_bot = True
                logger.debug(f"{self}: the user went on {gap:.2f} s after their speech, the turn had ended: "
                             f"joining the turns")
                await self.broadcast_frame(TurnResumedFrame, text=ended[1], gap_secs=round(gap, 3))
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self):
        await self._withdraw()  # a turn ended some other way (e.g. the stop watchdog)
        await self._cancel_hold()
        await self._cancel_acoustic()
        if self._acoustic is not None:
            self._acoustic.clear()
        if self._segments:
            self._ended = (self._speech_ended or self._clock(), self._turn_text, self._speaker)
        self._segments = []
        await super().handle_user_turn_stopped()

    async def cleanup(self):
        await self._cancel_hold()
        await self._cancel_acoustic()
        if self._acoustic is not None:
            await self._acoustic.cleanup()
        await super().cleanup()

    async def _withdraw(self) -> None:
        if self._speculation is not None:
            self._speculation = None
            self._approved = None
            await self.trigger_user_turn_speculation_cancelled()
