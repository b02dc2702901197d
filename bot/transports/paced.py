"""An input transport that delivers audio the way a sound card does: one 20 ms block at a time, on time.

The file transport, replay and Discord all feed the pipeline from a buffer rather than a device. They
share this loop: start the session clock, call :meth:`PacedInputTransport.tick` once per block at
real-time pace, and stop the feeder with the pipeline. What goes into each block is theirs.

Bounded (:mod:`bot.transports.overload`): while pipecat's input queue holds more than
``MAX_BACKLOG_SECS`` the loop pushes nothing, and when it is more than ``MAX_BUFFER_SECS`` behind its
timeline it skips the oldest blocks it owes (dropped, reported as ``audio.dropped``) instead of
pushing them all in a burst.
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import StartFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import TransportParams

from bot.transports.overload import MAX_BUFFER_SECS, BoundedInput

BLOCK_SECS = 0.02


class PacedInputTransport(BoundedInput, BaseInputTransport):
    resync_after_secs: float | None = None
    """When the loop falls this far behind (the event loop was blocked), start a new timeline instead of
    pushing blocks in a burst to catch up. None: always catch up, so the input keeps its own timeline."""
    skipping_drops_audio: bool = True
    """Whether block ``i`` is the input's audio at ``i * BLOCK_SECS`` (a file), so that skipping blocks drops
    audio (reported); False for a feeder that keeps its own position (replay): skipping only moves time."""

    def __init__(self, clock, params: TransportParams, *, feeder_name: str = "input-feeder", **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._clock = clock
        self._feeder_name = feeder_name
        self._feeder: asyncio.Task | None = None

    async def tick(self, i: int, block: int, silence: bytes) -> None:
        """Push block ``i`` (``block`` samples; ``silence`` is one silent block of PCM16)."""
        raise NotImplementedError

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._feeder is None:
            self._feeder = self.create_task(self._feed(), name=self._feeder_name)

    async def _feed(self) -> None:
        block = int(self.sample_rate * BLOCK_SECS)
        silence = bytes(block * 2)
        self._clock.start()
        loop = asyncio.get_running_loop()
        t0, i = loop.time(), 0
        max_behind = max(1, int(MAX_BUFFER_SECS / BLOCK_SECS))
        period = BLOCK_SECS / getattr(self._clock, "speed", 1.0)  # wall seconds per block
        while True:
            if self.behind:  # the pipeline has not taken what it got: wait (and drop below if it lasts)
                await asyncio.sleep(period)
            else:
                await self.tick(i, block, silence)
                i += 1
            owed = int((loop.time() - t0) / period) - i
            if self.resync_after_secs is not None and owed * BLOCK_SECS > self.resync_after_secs:
                t0, i = loop.time(), 0
            elif owed > max_behind:  # drop the oldest blocks owed, keep the newest
                skip = owed - max_behind
                i += skip
                if self.skipping_drops_audio:
                    self.drops.dropped(skip * BLOCK_SECS, "pipeline-behind")
            delay = t0 + i * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _stop_feeder(self) -> None:
        if self._feeder is not None:
            await self.cancel_task(self._feeder)
            self._feeder = None
        self.drops.flush()

    async def stop(self, frame) -> None:
        await self._stop_feeder()
        await super().stop(frame)

    async def cancel(self, frame) -> None:
        await self._stop_feeder()
        await super().cancel(frame)
