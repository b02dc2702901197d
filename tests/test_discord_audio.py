"""Discord audio adapters: frames in from py-cord's thread, silence gaps, resampling, frames out, flush, Opus.

No network and no models: synthetic audio only. Async code runs under ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import soxr

from bot.audio import pcm_to_float
from bot.discord.audio import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    SILENT_FRAME,
    FrameSlicer,
    PlaybackQueue,
    UserStream,
    to_discord_frames,
)
from bot.transports.discord import DiscordTransport

discord = pytest.importorskip("discord")


def tone(freq: float, secs: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(secs: float, rate: int, f0: float = 200.0, f1: float = 3000.0, amp: float = 0.3) -> np.ndarray:
    """A sweep: unlike a steady tone it lines up with itself at one lag only."""
    t = np.arange(int(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * secs)))).astype(np.float32)


def stereo_frames(samples: np.ndarray, rate: int) -> list[bytes]:
    return to_discord_frames(samples, rate)


def best_lag_corr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, correlation) of b against a, for the lag in [0, max_lag] that fits best."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    best = (0, -1.0)
    for lag in range(max_lag + 1):
        n = min(len(a), len(b) - lag)
        x, y = a[:n], b[lag:lag + n]
        c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
        if c > best[1]:
            best = (lag, c)
    return best


# --------------------------------------------------------------------------- frames in


def test_sink_delivers_frames_from_pycords_thread_to_the_event_loop():
    """The sink is called on py-cord's packet-router thread; the stream is only touched on the loop."""
    from bot.discord.pycord import VoiceSink

    seen: dict[str, set] = {"write": set(), "loop": set()}

    async def scenario() -> None:
        transport = DiscordTransport()
        transport._loop = asyncio.get_running_loop()  # what the input transport does when the pipeline starts
        original = transport.input().on_voice

        def on_voice(*args):
            seen["loop"].add(threading.current_thread().name)
            original(*args)

        transport.input().on_voice = on_voice

        def deliver(user_id, user, pcm, ts, arrival):
            seen["write"].add(threading.current_thread().name)
            transport.receive(user_id, user.display_name, pcm, timestamp=ts, arrival=arrival)

        sink = VoiceSink(deliver, accept=lambda uid: uid != 666)
        frames = stereo_frames(tone(300, 0.4, 48000), 48000)
        alice = type("M", (), {"id": 1, "display_name": "Alice"})()
        mallory = type("M", (), {"id": 666, "display_name": "Mallory"})()

        def router_thread() -> None:  # what py-cord's PacketRouter does for each decoded packet
            for i, pcm in enumerate(frames):
                packet = type("P", (), {"timestamp": 1000 + 960 * i, "sequence": i})()
                sink.write(type("VoiceData", (), {"pcm": pcm, "packet": packet})(), alice)
                sink.write(type("VoiceData", (), {"pcm": pcm, "packet": packet})(), mallory)
                sink.write(type("VoiceData", (), {"pcm": pcm, "packet": packet})(), None)  # unmapped SSRC
                time.sleep(0.002)

        thread = threading.Thread(target=router_thread, name="voice-receiver-packet-router")
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        stream = transport.input().streams[1]
        assert set(transport.input().streams) == {1}, "audio of users not on the allow-list is dropped on arrival"
        assert stream.frames_in == len(frames) == sink.frames
        assert sink.dropped == len(frames)
        assert transport.input().labels[1] == "Alice"
        assert abs(stream.buffered_secs - 0.4) < 0.05  # soxr holds a few tens of ms in its filter

    asyncio.run(scenario())
    assert seen["write"] == {"voice-receiver-packet-router"}
    assert seen["loop"] == {"MainThread"}


def test_receive_before_the_pipeline_starts_is_dropped_not_queued():
    transport = DiscordTransport()
    assert transport.receive(1, "a", SILENT_FRAME) is False
    assert transport.frames_received == 0


def test_silence_gaps_are_filled_from_rtp_timestamps():
    s = UserStream(16000)
    frame = stereo_frames(tone(200, 0.02, 48000), 48000)[0]
    t, ts = 100.0, 5000
    for _ in range(10):  # 200 ms of speech
        s.push(frame, timestamp=ts, arrival=t)
        ts += 960
        t += 0.02
    # the user pauses 500 ms: Discord sends nothing; the next packet's timestamp says how long it was
    ts += 24000
    t += 0.5 + 0.013  # network jitter on the arrival time must not matter
    for _ in range(10):
        s.push(frame, timestamp=ts, arrival=t)
        ts += 960
        t += 0.02
    s.push(b"", timestamp=None, arrival=t)  # nothing decoded: ignored
    total = 0.2 + 0.5 + 0.2
    assert abs(s.buffered_secs + 0.02 - total) < 0.02  # (soxr keeps ~16 ms in its filter)
    assert abs(s.gap_secs_filled - 0.5) < 1e-9
    out = s.read(int(total * 16000))
    gap = out[int(0.23 * 16000): int(0.68 * 16000)]
    assert np.abs(gap).max() < 200, "the pause is silence"
    assert np.abs(out[int(0.05 * 16000): int(0.15 * 16000)]).max() > 5000
    assert np.abs(out[int(0.75 * 16000): int(0.85 * 16000)]).max() > 5000


def test_gap_timestamps_wrap_and_fall_back_to_the_wall_clock():
    frame = stereo_frames(tone(200, 0.02, 48000), 48000)[0]
    # RTP timestamps wrap at 2**32
    s = UserStream(16000)
    s.push(frame, timestamp=2**32 - 960, arrival=0.0)
    s.push(frame, timestamp=(2**32 - 960 + 960 + 4800) % 2**32, arrival=0.12)  # 100 ms gap across the wrap
    assert abs(s.gap_secs_filled - 0.1) < 1e-9
    # a timestamp that disagrees with the wall clock by far (client restarted its clock): wall clock wins
    s = UserStream(16000)
    s.push(frame, timestamp=10_000, arrival=0.0)
    s.push(frame, timestamp=10_000 + 48000 * 3600, arrival=0.32)  # "an hour later", 300 ms of wall time
    assert abs(s.gap_secs_filled - 0.3) < 1e-9
    # no timestamps at all: the wall clock, in whole frames, ignoring jitter below 1.5 frames
    s = UserStream(16000)
    s.push(frame, timestamp=None, arrival=0.0)
    s.push(frame, timestamp=None, arrival=0.045)
    assert s.gap_secs_filled == 0.0
    s.push(frame, timestamp=None, arrival=0.045 + 0.02 + 0.2)
    assert abs(s.gap_secs_filled - 0.2) < 1e-9
    # a reordered or repeated packet adds no gap; an enormous gap is capped
    s = UserStream(16000, max_gap_secs=2.0)
    s.push(frame, timestamp=50_000, arrival=0.0)
    s.push(frame, timestamp=50_000, arrival=0.02)
    assert s.gap_secs_filled == 0.0
    s.push(frame, timestamp=50_000 + 960 + 48000 * 60, arrival=60.0)
    assert abs(s.gap_secs_filled - 2.0) < 1e-9


def test_silence_already_read_out_is_not_inserted_twice():
    """A stream read at real-time pace stays on real time: the reader's silence covers the gap."""
    frame = stereo_frames(tone(200, 0.02, 48000), 48000)[0]
    s = UserStream(16000)
    ts, t, read = 0, 0.0, 0
    for _ in range(5):
        s.push(frame, timestamp=ts, arrival=t)
        ts, t = ts + 960, t + 0.02
        read += len(s.read(320))
    for _ in range(25):  # 500 ms pause, read every 20 ms as the input transport does
        read += len(s.read(320))
    ts, t = ts + 24000, t + 0.5
    s.push(frame, timestamp=ts, arrival=t)
    # Only what soxr still held when the pause began is made up for; the 500 ms are not inserted again.
    assert s.gap_secs_filled < 0.04
    assert abs((read / 16000 + s.buffered_secs) - (t + 0.02)) < 0.04, "the stream is on real time"


def test_voice_activity_and_waiting_for_the_floor():
    speech = stereo_frames(tone(200, 0.5, 48000), 48000)
    s = UserStream(16000)
    for i, f in enumerate(speech):
        s.push(f, timestamp=960 * i, arrival=10 + 0.02 * i)
    assert s.spurt_start == 10 and s.pending_voice and abs(s.last_voice - (10 + 0.02 * 24)) < 1e-9
    s.push(SILENT_FRAME, timestamp=960 * 25, arrival=10.5)  # Discord's silence frames are not voice
    assert abs(s.last_voice - 10.48) < 1e-9
    s.wait_for_floor(now=11.0, max_secs=4.0)  # kept: their whole run of speech
    assert s.buffered_secs > 0.45 and s.pending_voice
    s.wait_for_floor(now=10.55, max_secs=0.2)  # kept: at most max_secs
    assert abs(s.buffered_secs - 0.2) < 0.001
    s.wait_for_floor(now=15.0, max_secs=4.0)  # their speech is older than max_secs: dropped unheard
    assert s.buffered_secs == 0 and not s.pending_voice
    s.push(speech[0], timestamp=960 * 400, arrival=20.0)
    assert s.spurt_start == 20.0  # a new run of speech
    s.read(int(s.buffered_secs * 16000) + 320)  # (after 2 s of silence filled in: the gap is capped)
    assert not s.pending_voice


# --------------------------------------------------------------------------- resampling


def test_resampling_round_trip_48k_stereo_to_16k_mono():
    """Pipeline-rate audio -> Discord frames -> the receive stream gives back the same signal."""
    rate = 16000
    original = chirp(1.0, rate)
    frames = stereo_frames(original, rate)
    assert all(len(f) == FRAME_BYTES for f in frames)
    s = UserStream(rate)
    for i, f in enumerate(frames):
        s.push(f, timestamp=960 * i, arrival=0.02 * i)
    back = s.read(int(s.buffered_secs * rate)).astype(np.float32) / 32767.0
    lag, corr = best_lag_corr(original, back, 800)
    assert corr > 0.995, corr
    assert lag < 0.02 * rate  # the two soxr filters delay it by a few ms
    assert abs(len(back) - len(original)) < 0.05 * rate


# --------------------------------------------------------------------------- frames out


def test_slicer_makes_exact_3840_byte_frames_and_pads_the_last():
    rate = 24000
    audio = (tone(300, 1.013, rate) * 32767).astype(np.int16)
    slicer = FrameSlicer(rate)
    frames: list[bytes] = []
    rng = np.random.default_rng(1)
    i = 0
    while i < len(audio):  # TTS chunks of arbitrary sizes
        n = int(rng.integers(1, 2000))
        frames += slicer.feed(audio[i:i + n].tobytes(), rate)
        i += n
    frames += slicer.flush()
    assert frames and all(len(f) == FRAME_BYTES for f in frames)
    expected = len(audio) * 2  # 24 kHz -> 48 kHz
    assert len(frames) == -(-expected // FRAME_SAMPLES)  # ceil: the last one is padded
    pcm = np.frombuffer(b"".join(frames), "<i2").reshape(-1, 2)
    assert np.array_equal(pcm[:, 0], pcm[:, 1]), "mono is duplicated to both channels"
    assert np.all(pcm[expected:] == 0), "padding is silence"
    assert slicer.flush() == []


def test_slicer_reset_drops_what_is_pending():
    slicer = FrameSlicer(24000)
    assert slicer.feed(np.full(500, 1000, np.int16).tobytes()) == []
    slicer.reset()
    assert slicer.flush() == []


def test_playback_queue_read_from_the_player_thread_then_flush():
    q = PlaybackQueue(hangover_frames=3)
    frame = stereo_frames(tone(300, 0.02, 48000), 48000)[0]
    q.put([frame] * 100)
    got: list[bytes] = []
    stop = threading.Event()

    def player() -> None:  # py-cord's AudioPlayer: read() every 20 ms until it returns b""
        while not stop.is_set():
            data = q.read()
            if not data:
                return
            got.append(data)
            time.sleep(0.02)

    thread = threading.Thread(target=player)
    thread.start()
    time.sleep(0.3)
    dropped = q.flush()  # barge-in
    flushed_at = len(got)
    thread.join(timeout=2)
    assert not thread.is_alive(), "after a flush the source ends, so the player stops"
    assert 70 < dropped < 95
    assert len(got) <= flushed_at + 1
    assert all(len(f) == FRAME_BYTES for f in got)
    with pytest.raises(ValueError):
        q.put([b"\x00" * 100])


def test_playback_queue_hangover_then_end_and_bounded_latency():
    q = PlaybackQueue(hangover_frames=2, max_frames=10)
    frame = b"\x01" * FRAME_BYTES
    q.put([frame])
    assert q.read() == frame
    assert q.read() == SILENT_FRAME and q.read() == SILENT_FRAME  # short gaps between sentences
    assert q.read() == b""  # then playback ends
    q.put([frame] * 25)  # nobody reading: the oldest are dropped
    assert len(q) == 10 and q.frames_dropped == 15


def test_output_transport_flushes_on_barge_in():
    """Bot audio through a pipecat pipeline into the output transport; an InterruptionFrame stops it at once."""
    from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame, TTSStartedFrame

    from test_discord_support import FakeVoiceClient, make_guild, run_pipeline
    from bot.discord.pycord import Player

    rate = 24000
    speech = (tone(300, 4.0, rate) * 32767).astype(np.int16).tobytes()

    async def scenario():
        transport = DiscordTransport(out_rate=rate)
        vc = FakeVoiceClient(make_guild())
        player = Player(vc, transport.playback)
        transport.on_playback = player.ensure

        async def body(worker):
            await worker.queue_frame(TTSStartedFrame())
            chunk = rate // 10 * 2
            for i in range(0, len(speech), chunk):
                await worker.queue_frame(TTSAudioRawFrame(speech[i:i + chunk], rate, 1))
            await asyncio.sleep(1.0)
            before = len(vc.played)
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(0.15)
            after_flush = len(vc.played)
            await asyncio.sleep(0.5)
            return before, after_flush, len(vc.played)

        before, after_flush, later = await run_pipeline([transport.output()], body, out_rate=rate)
        return transport, vc, before, after_flush, later

    transport, vc, before, after_flush, later = asyncio.run(scenario())
    assert vc.play_starts >= 1
    assert 30 <= before <= 60, before  # ~1 s played, paced like a sound card
    assert all(len(f) == FRAME_BYTES for f in vc.played)
    audible = [i for i, f in enumerate(vc.played) if np.abs(np.frombuffer(f, "<i2")).max() > 1000]
    assert audible and audible[-1] <= after_flush, "nothing of the reply is played after the barge-in"
    assert after_flush - before <= 8
    assert transport.output().flushed_frames >= 1
    assert later < 200, "the rest of the 4 s reply was dropped"


# --------------------------------------------------------------------------- Opus


def test_opus_round_trip_with_libopus():
    """The frames we send survive Discord's codec, and what py-cord decodes is what our stream expects."""
    opus = discord.opus
    if not opus.is_loaded():
        opus._load_default()
    assert opus.is_loaded(), "libopus0 is installed by scripts/setup.sh"
    rate = 24000
    original = chirp(1.0, rate)
    frames = to_discord_frames(original, rate)
    encoder, decoder = opus.Encoder(), opus.Decoder()
    packets = [encoder.encode(f, 960) for f in frames]
    assert all(0 < len(p) < 1500 for p in packets)
    decoded = [decoder.decode(p, fec=False) for p in packets]
    assert all(len(d) == FRAME_BYTES for d in decoded)
    assert len(decoder.decode(None, fec=False)) == FRAME_BYTES  # a lost packet is concealed, same size
    back = pcm_to_float(b"".join(decoded), 2)
    back24 = soxr.resample(back, 48000, rate)
    lag, corr = best_lag_corr(original, back24, 400)
    assert corr > 0.97, corr
