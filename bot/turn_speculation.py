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
"""

from __future__ import annotations

from collections.abc import Callable

from pipecat.frames.frames import Frame, TranscriptionFrame, VADUserStartedSpeakingFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy


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
    """

    def __init__(self, *, needs_approval: bool = False, voice_onset: Callable[[], bool] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._needs_approval = needs_approval
        self._voice_onset = voice_onset
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
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._withdraw()  # the user goes on: the turn is not over
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._segments.append(frame.text.strip())
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

    async def handle_user_turn_started(self):
        await self._withdraw()
        self._kept = None
        self._segments = []
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self):
        await self._withdraw()  # a turn ended some other way (e.g. the stop watchdog)
        self._segments = []
        await super().handle_user_turn_stopped()

    async def _withdraw(self) -> None:
        if self._speculation is not None:
            self._speculation = None
            self._approved = None
            await self.trigger_user_turn_speculation_cancelled()
