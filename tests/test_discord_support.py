"""Helpers shared by the Discord tests (no tests in here): Discord mocked at the network boundary only.

:class:`FakeVoiceClient` stands in for py-cord's ``VoiceClient`` where it would talk to Discord's servers:

* receive: ``start_recording`` runs py-cord's own ``PacketRouter`` (its jitter buffer, its Opus decoder, its
  router thread) with our real sink; :meth:`FakeVoiceClient.speak` plays a user's client, sending
  Opus-encoded RTP packets every 20 ms from a background thread, then Discord's five silence frames and
  nothing more (as a client does when its user stops talking);
* send: ``play`` runs a player thread that calls ``source.read()`` every 20 ms, as py-cord's ``AudioPlayer``
  does, and keeps every frame it would have Opus-encoded and sent.

Everything else (channels, members, the interaction context) is a SimpleNamespace with AsyncMock for the
network calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from types import SimpleNamespace
from unittest.mock import AsyncMock

import numpy as np
import pytest

discord = pytest.importorskip("discord")

from discord.voice.packets.core import OPUS_SILENCE  # noqa: E402
from discord.voice.packets.rtp import decode as rtp_decode  # noqa: E402
from discord.voice.receive.router import PacketRouter  # noqa: E402


def rtp_packet(seq: int, ts: int, ssrc: int, payload: bytes):
    """An RTP packet as py-cord's reader hands it on after transport decryption (and DAVE)."""
    header = struct.pack(">BBHII", 0x80, 0x78, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    packet = rtp_decode(header + payload)
    packet.decrypted_data = payload
    return packet


class FakeVoiceClient:
    def __init__(self, guild) -> None:
        self.guild = guild
        self._ssrc_to_id: dict[int, int] = {}
        self._connection = SimpleNamespace(dave_session=None)
        self.client = SimpleNamespace(get_user=lambda _id: None)
        self.router: PacketRouter | None = None
        self.sinks: list = []
        self.played: list[bytes] = []
        self.play_starts = 0
        self._player: threading.Thread | None = None
        self._stop_play = threading.Event()
        self.connected = True
        self.disconnect = AsyncMock(side_effect=self._disconnect)
        self._seq: dict[int, tuple[int, int]] = {}

    async def _disconnect(self, force: bool = False) -> None:
        self.connected = False
        self.stop()

    def is_connected(self) -> bool:
        return self.connected

    def is_recording(self) -> bool:
        return self.router is not None

    def start_recording(self, sink, after=None) -> None:
        assert sink.client is self, "py-cord's decoder reads sink.client: it must be set before recording"
        reader = SimpleNamespace(client=self, error=None,
                                 event_router=SimpleNamespace(dispatch=lambda *a, **k: None))
        self.sinks.append(sink)
        self.router = PacketRouter(sink, reader)
        self.router.start()

    def stop_recording(self) -> None:
        if self.router is not None:
            self.router.stop()
            self.router = None

    def is_playing(self) -> bool:
        return self._player is not None and self._player.is_alive() and not self._stop_play.is_set()

    def play(self, source, after=None) -> None:
        if self.is_playing():
            raise discord.ClientException("Already playing audio")
        assert isinstance(source, discord.AudioSource) and not source.is_opus()
        stop = self._stop_play = threading.Event()
        self.play_starts += 1

        def run() -> None:
            start, n = time.perf_counter(), 0
            while not stop.is_set():
                data = source.read()
                if not data:
                    break
                self.played.append(data)
                n += 1
                time.sleep(max(0.0, start + 0.02 * n - time.perf_counter()))
            stop.set()
            if after is not None:
                after(None)

        self._player = threading.Thread(target=run, name="fake-audio-player", daemon=True)
        self._player.start()

    def stop(self) -> None:
        self._stop_play.set()

    def speak(self, user_id: int, ssrc: int, frames: list[bytes], *, ts_start: int = 123456) -> None:
        """A user's Discord client: Opus RTP packets every 20 ms (call from a background thread)."""
        self._ssrc_to_id[ssrc] = user_id
        encoder = discord.opus.Encoder()
        seq, ts = self._seq.get(ssrc, (1000, ts_start))
        t0 = time.perf_counter()
        payloads = [encoder.encode(pcm, 960) for pcm in frames] + [OPUS_SILENCE] * 5
        for i, payload in enumerate(payloads):
            router = self.router
            if router is None:
                return
            router.feed_rtp(rtp_packet(seq, ts, ssrc, payload))
            seq, ts = seq + 1, ts + 960
            time.sleep(max(0.0, t0 + 0.02 * (i + 1) - time.perf_counter()))
        self._seq[ssrc] = (seq, ts + 48000)  # the RTP clock runs on while the user is silent

    def speak_in_background(self, user_id: int, ssrc: int, frames: list[bytes]) -> threading.Thread:
        thread = threading.Thread(target=self.speak, args=(user_id, ssrc, frames), daemon=True)
        thread.start()
        return thread


def member(user_id: int, name: str, channel=None, bot: bool = False):
    return SimpleNamespace(id=user_id, display_name=name, bot=bot,
                           voice=SimpleNamespace(channel=channel) if channel is not None else None)


def make_guild(guild_id: int = 1, members: dict | None = None):
    members = {} if members is None else members
    return SimpleNamespace(id=guild_id, me=SimpleNamespace(display_name="Nova"), get_member=members.get,
                           members=members)


def make_channel(guild, vc, channel_id: int = 10, name: str = "General", send=None):
    return SimpleNamespace(id=channel_id, name=name, guild=guild, connect=AsyncMock(return_value=vc),
                           send=send or AsyncMock(return_value=SimpleNamespace(id=999)))


def ctx(guild_id, author):
    return SimpleNamespace(guild_id=guild_id, author=author, respond=AsyncMock(), defer=AsyncMock())


def said(context) -> str:
    """The text of the last (ephemeral) reply to an interaction."""
    args, kwargs = context.respond.call_args
    assert kwargs.get("ephemeral") is True
    return args[0]


def speech_frames(text: str, lead_secs: float = 0.3) -> list[bytes]:
    """``text`` spoken by Piper, as Discord's 3840-byte 48 kHz stereo frames."""
    from bot.discord.audio import to_discord_frames
    from bot.speech import synthesize

    audio, rate = synthesize(text)
    return to_discord_frames(np.concatenate([np.zeros(int(lead_secs * rate), np.float32), audio]), rate)


async def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def run_pipeline(processors, body, *, in_rate: int = 16000, out_rate: int = 24000):
    """Run ``processors`` in a pipecat pipeline while ``await body(worker)`` runs, then end it."""
    from pipecat.frames.frames import EndFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    worker = PipelineWorker(Pipeline(processors), params=PipelineParams(audio_in_sample_rate=in_rate,
                                                                         audio_out_sample_rate=out_rate),
                            idle_timeout_secs=None, enable_rtvi=False, check_dangling_tasks=False)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        return await body(worker)
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(running), timeout=10)
        except TimeoutError:
            await worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
