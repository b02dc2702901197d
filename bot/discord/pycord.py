"""The only module that touches py-cord's voice classes: the receive sink and the playback source.

Written against py-cord 2.8.1, whose receive path (``discord.voice.receive``) decrypts DAVE end-to-end
encryption before decoding Opus. Its ``PacketRouter`` thread calls ``sink.write(data, user)`` for every
20 ms frame of every speaker, with ``data`` a ``VoiceData`` (``.pcm``: 3840 bytes of 48 kHz stereo s16le,
``.packet``: the RTP packet with ``.timestamp`` and ``.sequence``; a lost packet arrives as a concealed
``FakePacket``) and ``user`` the member (or a bare ``Object`` with an ``id``, or None before the SSRC is
mapped to a user).

py-cord 2.8.1's router also expects a few things of a sink that its own ``Sink`` base class does not
provide (found by reading its source; see docs/discord.md): ``is_opus()``, ``walk_children()`` and
``__sink_listeners__``, and ``sink.client`` set before the first packet (``start_recording`` no longer
calls ``sink.init(vc)``). :class:`VoiceSink` provides them; :func:`start_listening` calls ``init`` itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import discord
from discord.sinks import Sink

from bot.discord.audio import PlaybackQueue

log = logging.getLogger(__name__)

Deliver = Callable[[int, Any, bytes, "int | None", float], None]
"""(user_id, user object, pcm, rtp timestamp, monotonic arrival) -> None; must be quick and thread-safe."""


class VoiceSink(Sink):
    """Receives every decoded frame on py-cord's packet-router thread and hands it on; never blocks."""

    __sink_listeners__: list[tuple[str, str]] = []

    def __init__(self, deliver: Deliver, *, accept: Callable[[int], bool] | None = None) -> None:
        super().__init__()
        self._deliver = deliver
        self._accept = accept
        self.frames = 0
        self.dropped = 0

    def is_opus(self) -> bool:
        return False  # we want PCM: py-cord decodes (after DAVE) with its own Opus decoder

    def walk_children(self):
        return iter(())

    def write(self, data: Any, user: Any) -> None:  # py-cord's packet-router thread
        user_id = getattr(user, "id", None)
        pcm = getattr(data, "pcm", b"")
        if user_id is None or not pcm:
            return  # SSRC not mapped to a user yet, or nothing decoded
        if self._accept is not None and not self._accept(user_id):
            self.dropped += 1
            return  # not on the allow-list: dropped on arrival, never buffered
        packet = getattr(data, "packet", None)
        timestamp = getattr(packet, "timestamp", None)
        self.frames += 1
        try:
            self._deliver(user_id, user, pcm, timestamp if isinstance(timestamp, int) else None, time.monotonic())
        except Exception:  # noqa: BLE001 - an exception here would stop py-cord's receive thread
            log.exception("discord voice sink: delivering a frame failed")

    def cleanup(self) -> None:
        self.finished = True


def start_listening(vc: Any, sink: VoiceSink, after: Callable[[Exception | None], Any] | None = None) -> None:
    """Start py-cord's receive path on ``vc`` with ``sink``."""
    sink.init(vc)  # py-cord 2.8.1's decoder reads sink.client before the first packet
    vc.start_recording(sink, after)


class PlaybackSource(discord.AudioSource):
    """py-cord's player reads one 3840-byte PCM frame every 20 ms from the transport's queue."""

    def __init__(self, queue: PlaybackQueue) -> None:
        self.queue = queue

    def read(self) -> bytes:
        return self.queue.read()

    def is_opus(self) -> bool:
        return False

    def cleanup(self) -> None:
        pass  # the queue outlives one run of the player: it is played again on the next utterance


class Player:
    """Keeps py-cord's player running while the transport has audio: started on the event loop when frames
    are queued; it stops by itself (the source returns ``b""``) once the queue has been empty a moment.

    Barge-in flushes the queue; it never calls ``vc.stop()``, which in py-cord 2.8 also stops receiving."""

    def __init__(self, vc: Any, queue: PlaybackQueue, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.vc = vc
        self.source = PlaybackSource(queue)
        self.loop = loop or asyncio.get_running_loop()
        self.starts = 0

    def ensure(self) -> None:
        """Event loop thread."""
        vc = self.vc
        try:
            if not vc.is_connected() or vc.is_playing() or not len(self.source.queue):
                return
            vc.play(self.source, after=self._after)
            self.starts += 1
        except discord.ClientException as exc:  # already playing (a race with the player ending) or gone
            log.debug("discord player: %s", exc)

    def _after(self, error: Exception | None) -> None:  # the player thread, when it stopped
        if error is not None:
            log.warning("discord player stopped: %s", error)
        try:
            self.loop.call_soon_threadsafe(self.ensure)  # audio queued while it was stopping
        except RuntimeError:  # the event loop is closed: we are shutting down
            pass
