"""An input transport that delivers audio the way a sound card does: one 20 ms block at a time, on time.

The file transport, replay and Discord all feed the pipeline from a buffer rather than a device. They
share this loop: start the session clock, call :meth:`PacedInputTransport.tick` once per block at
real-time pace, and stop the feeder with the pipeline. What goes into each block is theirs.
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import StartFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import TransportParams

BLOCK_SECS = 0.02


class PacedInputTransport(BaseInputTransport):
    resync_after_secs: float | None = None
    """When the loop falls this far behind (the event loop was blocked), start a new timeline instead of
    pushing blocks in a burst to catch up. None: always catch up, so the input keeps its own timeline."""

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
        while True:
            await self.tick(i, block, silence)
            i += 1
            delay = t0 + i * BLOCK_SECS - loop.time()
            if self.resync_after_secs is not None and delay < -self.resync_after_secs:
                t0, i = loop.time(), 0
            elif delay > 0:
                await asyncio.sleep(delay)

    async def _stop_feeder(self) -> None:
        if self._feeder is not None:
            await self.cancel_task(self._feeder)
            self._feeder = None

    async def stop(self, frame) -> None:
        await self._stop_feeder()
        await super().stop(frame)

    async def cancel(self, frame) -> None:
        await self._stop_feeder()
        await super().cancel(frame)
