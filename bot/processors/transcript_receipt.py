"""Where the user's transcripts come out of the caller's transcript processors (``SessionHooks.on_transcript``).

Placed right after those processors, it learns per user turn whether any transcript was let through:

* at the end of a turn none of whose transcripts came through (the user aggregator's ``UserStoppedSpeakingFrame``
  in pipeline and audio-llm; the realtime service's :class:`~bot.frames.UserTurnTranscribedFrame`), it pushes a
  :class:`~bot.frames.UserTurnHeldFrame`, so turn tracking closes that turn as heard and not answered (and the
  next utterance starts a turn of its own);
* in realtime, it tells the service the verdict of each committed turn (:meth:`expect`), which then asks the
  server for a response, or deletes the user's item.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.frames.frames import Frame, TranscriptionFrame, UserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import UserTurnHeldFrame, UserTurnTranscribedFrame


class TranscriptReceipt(FrameProcessor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(name="transcript-receipt", **kwargs)
        self._verdicts: dict[str, asyncio.Future[bool]] = {}
        self._passed = False
        self.held = 0

    def expect(self, item_id: str) -> asyncio.Future[bool]:
        """A future that says whether the transcript of realtime item ``item_id`` came through."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._verdicts[item_id] = future
        return future

    def forget(self, item_id: str) -> None:
        self._verdicts.pop(item_id, None)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self._passed = True
        elif isinstance(frame, UserTurnTranscribedFrame):
            passed = await self._turn_ended()
            future = self._verdicts.pop(frame.item_id, None)
            if future is not None and not future.done():
                future.set_result(passed)
            return  # the service's marker for the hooks and this receipt; nothing further needs it
        elif isinstance(frame, UserStoppedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            await self._turn_ended()
        await self.push_frame(frame, direction)

    async def _turn_ended(self) -> bool:
        passed, self._passed = self._passed, False
        if not passed:
            self.held += 1
            await self.push_frame(UserTurnHeldFrame())
        return passed
