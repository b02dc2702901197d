"""The hold-back buffer: model audio waits until the transcript that covers it has passed output moderation.

Pure logic (no I/O, no clock: callers pass ``now`` in seconds), so every rule is unit-tested.

**Covering rule.** The Realtime API streams the transcript of a response ahead of (or with) the audio it
describes. So:

* each audio delta is stamped with how many transcript deltas had arrived before it;
* the transcript is cut into chunks (:class:`~bot.text_split.TextSplitter`: sentences, or clauses); a chunk
  is complete when the delta that ends it arrives, and that delta's number is the chunk's ``last_delta``
  (a sentence end at the end of what has arrived counts at once unless what follows could change it:
  ``Dr.``, ``3.``, ``...``, an open quote);
* when chunk *k* passes moderation, every held audio delta that arrived *before* chunk *k*'s last delta is
  released; audio that arrived after it waits for the next chunk;
* once the transcript is complete (:meth:`HoldBack.finish_text`) and every chunk has passed, everything is
  released, including audio that arrives later.

**Unordered transcripts** (``ordered=False``, Gemini Live). When the transcript is not guaranteed to come
ahead of the audio it describes, how many deltas arrived before an audio delta says nothing about which text
covers it: audio of sentence 2 can arrive before sentence 1's transcript ends. The only text known to cover
a piece of audio is then the whole transcript, so audio is released once the complete transcript has
passed (strict), i.e. after the model has finished its answer. Lag and monitor mode work as above.

**Lag.** Audio that no transcript delta has followed is not covered by anything yet. In ``strict`` mode,
:meth:`HoldBack.lagging` says when the oldest such audio has waited longer than ``max_lag`` seconds: the
caller then drops everything held and cancels the response. In ``monitor`` mode audio is released on
arrival (the caller paces it), chunks are still checked, and a failing chunk stops what is not yet played.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from bot.realtime.playout import BYTES_PER_MS
from bot.text_split import TextSplitter

ALL_TEXT = 1 << 62
"""``last_delta`` of the final chunk: it covers every audio delta of the response."""


@dataclass
class Chunk:
    """One piece of the transcript to check."""

    index: int
    text: str
    last_delta: int
    """Number of the transcript delta that completed it (:data:`ALL_TEXT` for the final chunk)."""
    t_ready: float


@dataclass
class Piece:
    """One audio delta (pcm16 bytes) and what was known when it arrived."""

    pcm: bytes
    t_arrival: float
    deltas_before: int
    """Transcript deltas received before this audio: it is covered by the first one after it."""
    offset: int
    """Byte offset of this audio in the response's audio."""


@dataclass
class HoldStats:
    """How long audio waited in the buffer (what hold-back adds to latency)."""

    first_arrival: float | None = None
    first_release: float | None = None
    released_bytes: int = 0
    dropped_bytes: int = 0
    leaked_bytes: int | None = None
    """Set when a chunk failed: audio of the response released for playback that no passed check covered
    (strict: always 0; monitor: what reached the speaker before the failing check came back)."""
    max_wait: float = 0.0
    _weighted_wait: float = field(default=0.0, repr=False)

    def note_release(self, piece: Piece, now: float) -> None:
        wait = max(0.0, now - piece.t_arrival)
        if self.first_release is None:
            self.first_release = now
        self.released_bytes += len(piece.pcm)
        self.max_wait = max(self.max_wait, wait)
        self._weighted_wait += wait * len(piece.pcm)

    @property
    def first_audio_wait(self) -> float | None:
        """First model audio received -> first audio released: the hold-back added before the bot speaks."""
        if self.first_arrival is None or self.first_release is None:
            return None
        return max(0.0, self.first_release - self.first_arrival)

    @property
    def mean_wait(self) -> float | None:
        return self._weighted_wait / self.released_bytes if self.released_bytes else None

    def timings_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.first_audio_wait is not None:
            out["holdback_ms"] = round(self.first_audio_wait * 1000.0, 1)
        if self.mean_wait is not None:
            out["holdback_mean_ms"] = round(self.mean_wait * 1000.0, 1)
            out["holdback_max_ms"] = round(self.max_wait * 1000.0, 1)
        if self.leaked_bytes is not None:
            out["leaked_ms"] = round(self.leaked_bytes / BYTES_PER_MS, 1)
        return out


class HoldBack:
    """The audio and transcript of one response, and which of its audio may be played."""

    def __init__(self, mode: str = "strict", *, max_lag: float = 1.5, chunker: TextSplitter | None = None,
                 ordered: bool = True) -> None:
        if mode not in ("strict", "monitor"):
            raise ValueError(f"unknown hold-back mode {mode!r}: use strict or monitor")
        self.mode = mode
        self.ordered = ordered
        """The transcript comes ahead of the audio it covers (OpenAI); else only the whole of it covers audio."""
        self.max_lag = max_lag
        self.chunker = chunker or TextSplitter()
        self.stats = HoldStats()
        self.text = ""
        self.deltas = 0
        self.received_bytes = 0
        self.text_done = False
        self.closed = False
        """Blocked, lagging or cut: nothing more is released."""
        self._held: deque[Piece] = deque()
        self._cleared = 0
        """Audio with ``deltas_before`` below this is covered by text that passed."""
        self._chunks = 0
        self._passed = 0
        self._released_unchecked: list[tuple[int, int]] = []
        """(deltas_before, bytes) of audio released before any passed chunk covered it (monitor mode)."""

    # -- input ------------------------------------------------------------------------------------

    def add_text(self, delta: str, now: float) -> list[Chunk]:
        """A transcript delta arrived; returns the chunks it completed, to be checked in order."""
        self.deltas += 1
        self.text += delta
        return [self._chunk(t, self.deltas, now) for t in self.chunker.feed(delta)]

    def finish_text(self, now: float) -> list[Chunk]:
        """The transcript is complete; returns the last chunk (if any text was left). If every chunk has
        already passed, everything held is now releasable: call :meth:`release`."""
        if self.text_done:
            return []
        self.text_done = True
        rest = self.chunker.flush()
        chunks = [self._chunk(rest, ALL_TEXT, now)] if rest else []
        self._maybe_all_clear()
        return chunks

    def add_audio(self, pcm: bytes, now: float) -> list[Piece]:
        """An audio delta arrived; returns what may be played now (monitor: all of it)."""
        piece = Piece(pcm=pcm, t_arrival=now, deltas_before=self.deltas, offset=self.received_bytes)
        self.received_bytes += len(pcm)
        if self.stats.first_arrival is None:
            self.stats.first_arrival = now
        if self.closed:
            self.stats.dropped_bytes += len(pcm)
            return []
        self._held.append(piece)
        return self._release(now)

    # -- verdicts ---------------------------------------------------------------------------------

    def passed(self, chunk: Chunk, now: float) -> list[Piece]:
        """``chunk`` passed moderation: returns the audio it releases."""
        self._passed += 1
        self._cleared = max(self._cleared, chunk.last_delta)
        self._maybe_all_clear()
        return self._release(now)

    def drop(self) -> int:
        """Stop: drop everything held (a failing chunk, lag, barge-in). Returns the bytes dropped."""
        self.closed = True
        dropped = sum(len(p.pcm) for p in self._held)
        self._held.clear()
        self.stats.dropped_bytes += dropped
        return dropped

    def blocked(self) -> int:
        """A chunk failed moderation: note how much unchecked audio was already released (the leak a
        reviewer must know about), then drop everything held. Returns the bytes dropped."""
        self.stats.leaked_bytes = sum(p_len for before, p_len in self._released_unchecked if before >= self._cleared)
        return self.drop()

    def release(self, now: float) -> list[Piece]:
        """What may be played now (after :meth:`finish_text`, or to poll)."""
        return self._release(now)

    # -- state ------------------------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        return sum(len(p.pcm) for p in self._held)

    @property
    def all_clear(self) -> bool:
        """The whole transcript has arrived and passed."""
        return self._cleared >= ALL_TEXT

    def lagging(self, now: float) -> float | None:
        """strict: seconds the oldest audio without any transcript delta after it has waited, if that is
        longer than ``max_lag`` (else None)."""
        if self.mode != "strict" or self.closed or self.text_done:
            return None
        for piece in self._held:
            if piece.deltas_before >= self.deltas:  # nothing of the transcript has followed it yet
                waited = now - piece.t_arrival
                return waited if waited > self.max_lag else None
        return None

    # -- internals --------------------------------------------------------------------------------

    def _chunk(self, text: str, last_delta: int, now: float) -> Chunk:
        chunk = Chunk(index=self._chunks, text=text, last_delta=last_delta, t_ready=now)
        self._chunks += 1
        return chunk

    def _maybe_all_clear(self) -> None:
        # Every chunk of a complete transcript passed: the transcript covers all the audio, even audio that
        # arrives after it. A response with no transcript at all is never cleared (nothing was checked).
        if self.text_done and self._chunks and self._passed >= self._chunks:
            self._cleared = ALL_TEXT

    def _covered(self, piece: Piece) -> bool:
        return piece.deltas_before < self._cleared if self.ordered else self.all_clear

    def _release(self, now: float) -> list[Piece]:
        out: list[Piece] = []
        if self.closed:
            return out
        while self._held and (self.mode == "monitor" or self._covered(self._held[0])):
            piece = self._held.popleft()
            self.stats.note_release(piece, now)
            if not self._covered(piece):  # monitor: played before the text covering it passed
                self._released_unchecked.append((piece.deltas_before if self.ordered else ALL_TEXT, len(piece.pcm)))
            out.append(piece)
        return out
