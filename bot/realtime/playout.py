"""What the speaker has actually played of each response's audio.

The realtime service pushes a :class:`PlayoutMarkFrame` after every piece of audio it hands to the output
transport. The transport queues non-audio frames behind the audio before them and passes them on once that
audio has been written to the device, so the :class:`PlayoutMeter` placed right after the output transport
sees each mark when its audio has been played. It records the latest played offset per response in a
:class:`PlayoutLedger` shared with the service, which uses it to truncate the server's copy of an
interrupted answer at the millisecond actually played, and to pace audio in ``monitor`` mode.

Accuracy: the transport plays in chunks (40 ms by default), so an offset can run up to one chunk ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import DataFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

BYTES_PER_MS = 48
"""pcm16 mono at 24 kHz: 24 samples per ms, 2 bytes each."""


@dataclass
class PlayoutMarkFrame(DataFrame):
    """All audio of ``key`` up to byte ``offset`` was handed to the speaker before this frame."""

    key: str = ""
    offset: int = 0


KEPT_KEYS = 32
"""Offsets are kept for this many most recent audio keys: only the response playing (or just played) is ever
asked about, and a long session must not keep one entry per response it ever had."""


class RecentOffsets:
    """The highest byte offset reached per audio key, for the :data:`KEPT_KEYS` keys raised most recently."""

    def __init__(self, keep: int = KEPT_KEYS) -> None:
        self._offsets: dict[str, int] = {}
        self._keep = keep

    def raise_to(self, key: str, offset: int) -> None:
        if offset > self._offsets.get(key, 0):
            self._offsets.pop(key, None)  # to the end: most recent last
            self._offsets[key] = offset
            while len(self._offsets) > self._keep:
                del self._offsets[next(iter(self._offsets))]

    def get(self, key: str | None) -> int:
        return self._offsets.get(key, 0) if key else 0

    def __len__(self) -> int:
        return len(self._offsets)


class PlayoutLedger:
    """Played byte offset per audio key (a response's item id, or a refusal)."""

    def __init__(self) -> None:
        self._played = RecentOffsets()

    def mark(self, key: str, offset: int) -> None:
        self._played.raise_to(key, offset)

    def played_bytes(self, key: str | None) -> int:
        return self._played.get(key)

    def played_ms(self, key: str | None) -> int:
        return self.played_bytes(key) // BYTES_PER_MS


class PlayoutMeter(FrameProcessor):
    """Right after the output transport: turns marks into played offsets (marks stop here)."""

    def __init__(self, ledger: PlayoutLedger, **kwargs) -> None:
        super().__init__(name="realtime-playout", **kwargs)
        self.ledger = ledger

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, PlayoutMarkFrame):
            self.ledger.mark(frame.key, frame.offset)
            return
        await self.push_frame(frame, direction)
