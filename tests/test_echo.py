"""Echo handling, measured: WebRTC AEC3 (livekit) on simulated echo paths, and the echo policies in a session.

The benchmark plays a known bot answer (Piper) through simulated echo paths (delayed, attenuated,
reverberant, band-limited like a laptop speaker, slightly clipped), optionally mixed with the user
talking over it, runs :class:`bot.echo.WebRtcEchoCanceller` exactly as the live pipeline does (20 ms
blocks, far end first) and reports the echo return loss enhancement (ERLE) and whether Silero VAD (with
the project's VAD settings) still fires on what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest
import soxr
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bot.config import VADConfig
from bot.echo import EchoPolicy, EchoReference, WebRtcEchoCanceller, resolve_policy
from bot.errors import VoicebotError

RATE = 16000
STORY = ("Let me tell you a long story. Once upon a time there was a small robot. It lived in a quiet town "
         "by the sea. Every morning it walked to the harbour and counted the boats and the birds.")
NEAR = "Please stop, what time is it now?"
NEAR_AT = 6.0
CONVERGED_AT = 1.5


def room_response(rt60: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    n = int(0.25 * rate)
    t = np.arange(n) / rate
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
    h[0] = 1.0
    return h / np.sqrt(np.sum(h ** 2))


def band_pass(x: np.ndarray, low: float, high: float, rate: int = RATE, taps: int = 255) -> np.ndarray:
    """Windowed-sinc FIR band-pass: a small speaker has no bass and little treble."""
    n = np.arange(taps) - (taps - 1) / 2

    def lp(fc: float) -> np.ndarray:
        return 2 * fc / rate * np.sinc(2 * fc / rate * n)

    h = (lp(high) - lp(low)) * np.hamming(taps)
    return np.convolve(x, h)[: len(x)]


PATHS = {
    # name: (delay s, gain dB, rt60 or None, band-pass, clipping)
    "direct -0dB 80ms": (0.08, 0.0, None, False, False),
    "room -6dB 120ms": (0.12, -6.0, 0.3, False, False),
    "laptop room+bandpass+clip -3dB 150ms": (0.15, -3.0, 0.3, True, True),
    "far room -12dB 250ms": (0.25, -12.0, 0.5, False, False),
}


def echo_of(far: np.ndarray, path: str, rng: np.random.Generator) -> np.ndarray:
    delay, gain_db, rt60, bp, clip = PATHS[path]
    x = far.astype(np.float64)
    if clip:
        x = np.tanh(2.0 * x) / 2.0 * 1.3  # a small speaker driven hard
    if bp:
        x = band_pass(x, 200.0, 5000.0)
    if rt60:
        x = np.convolve(x, room_response(rt60, rng))[: len(x)]
    x = np.concatenate([np.zeros(int(delay * RATE)), x])[: len(far)]
    return (x * 10 ** (gain_db / 20)).astype(np.float32)


def vad_speaking_secs(x: np.ndarray, start: float, end: float) -> float:
    """Seconds Silero VAD (the project's settings) reports speech in [start, end)."""
    cfg = VADConfig()
    vad = SileroVADAnalyzer(sample_rate=RATE, params=VADParams(confidence=cfg.confidence, start_secs=cfg.start_secs,
                                                               stop_secs=cfg.stop_secs, min_volume=cfg.min_volume))
    vad.set_sample_rate(RATE)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    block = int(0.02 * RATE)
    speaking = 0.0
    for i in range(0, len(pcm) - block, block):
        state = vad._run_analyzer(pcm[i:i + block].tobytes())
        if state == VADState.SPEAKING and start <= i / RATE < end:
            speaking += 0.02
    return speaking


def cancel(far: np.ndarray, mic: np.ndarray) -> np.ndarray:
    """Run the canceller as the live pipeline does: 20 ms blocks, far end handed over first."""
    aec = WebRtcEchoCanceller(RATE)
    out = []
    block = int(0.02 * RATE)
    to16 = lambda a: (np.clip(a, -1, 1) * 32767).astype("<i2").tobytes()  # noqa: E731
    for i in range(0, len(mic) - block + 1, block):
        aec.far(to16(far[i:i + block]), RATE)
        out.append(np.frombuffer(aec.near(to16(mic[i:i + block])), dtype="<i2"))
    return np.concatenate(out).astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def signals(piper):
    far, rate = piper(STORY, deterministic=True)  # the same samples every run, so the numbers repeat
    near, _ = piper(NEAR, deterministic=True)
    far = soxr.resample(far, rate, RATE).astype(np.float32)
    near = soxr.resample(near, rate, RATE).astype(np.float32)
    total = len(far) + RATE
    return np.pad(far, (0, total - len(far))), near


FAR_ROOM_LIMIT = pytest.mark.xfail(
    strict=True, reason="known limit: in a reverberant far room (-12 dB, 250 ms, RT60 0.5 s) AEC3 leaves ~0.5 s of "
                        "residual that Silero takes for speech (ERLE ~12 dB), enough for a false barge-in; "
                        "docs/microphone.md recommends half-duplex there")


@pytest.mark.parametrize("path", [pytest.param(p, marks=FAR_ROOM_LIMIT) if p.startswith("far room") else p
                                  for p in PATHS])
def test_aec_removes_the_echo_and_keeps_the_user(signals, transcriber, path):
    """ERLE and VAD on the residual, echo alone and with the user talking over the bot."""
    far, near = signals
    rng = np.random.default_rng(7)
    echo = echo_of(far, path, rng)
    noise = rng.standard_normal(len(far)).astype(np.float32) * 3e-4  # a quiet room
    mic_echo_only = echo + noise
    mic_double_talk = mic_echo_only.copy()
    i = int(NEAR_AT * RATE)
    mic_double_talk[i:i + len(near)] += 0.5 * near[: len(far) - i]

    res_echo_only = cancel(far, mic_echo_only)
    res_double = cancel(far, mic_double_talk)

    a, b = int(CONVERGED_AT * RATE), len(res_echo_only)
    erle = 10 * np.log10(np.mean(echo[a:b].astype(np.float64) ** 2) /
                         max(np.mean(res_echo_only[a:b].astype(np.float64) ** 2), 1e-12))
    a2, b2 = int(CONVERGED_AT * RATE), int(NEAR_AT * RATE)
    erle_before_talk = 10 * np.log10(np.mean(echo[a2:b2].astype(np.float64) ** 2) /
                                     max(np.mean(res_double[a2:b2].astype(np.float64) ** 2), 1e-12))
    end = len(far) / RATE
    vad_raw = vad_speaking_secs(mic_echo_only, 0.0, end)
    vad_res = vad_speaking_secs(res_echo_only, 0.0, end)
    vad_res_after_convergence = vad_speaking_secs(res_echo_only, CONVERGED_AT, end)
    near_end = NEAR_AT + len(near) / RATE
    vad_near = vad_speaking_secs(res_double, NEAR_AT, near_end + 0.3)
    heard = transcriber(res_double, start=NEAR_AT - 0.2, end=near_end + 0.3)
    print(f"\n{path}: ERLE {erle:.1f} dB (before double talk {erle_before_talk:.1f} dB) | VAD on echo: raw "
          f"{vad_raw:.1f} s, residual {vad_res:.1f} s ({vad_res_after_convergence:.1f} s after "
          f"{CONVERGED_AT} s) | user under echo: VAD {vad_near:.1f} s, whisper: {heard!r}")

    assert vad_raw > 1.0, "the simulated echo must be loud enough to fool the VAD without AEC"
    # Piper's voice varies from run to run, so do these numbers; the bounds hold with margin over many runs
    # (measured: direct 49-52 dB, room 26-32, laptop 15-38, far room 13-27; VAD on the residual 0-0.1 s).
    assert erle >= (35.0 if path.startswith("direct") else 10.0)
    assert vad_res_after_convergence <= 0.2, "the VAD fired on the residual echo"
    # Double talk: AEC3's suppressor also eats part of the user's words (the VAD hears 0.1-1.0 s of the 1.7 s
    # sentence, 2.4 s without AEC), but it still hears the user start talking, which is what barge-in needs;
    # the transcript of that first utterance may be damaged.
    assert vad_near > 0, "the user talking over the bot was cancelled too: no barge-in possible"


def test_canceller_resamples_the_far_end_and_handles_partial_blocks(signals):
    """The speaker runs at the device rate (44.1 kHz here): the canceller resamples it itself."""
    far, _ = signals
    far = far[: 6 * RATE]
    far44 = soxr.resample(far, RATE, 44100).astype(np.float32)
    echo = echo_of(far, "room -6dB 120ms", np.random.default_rng(3))
    aec = WebRtcEchoCanceller(RATE)
    out = []
    i44 = 0
    step = int(0.02 * RATE)
    for i in range(0, len(echo) - step + 1, step):
        n44 = round((i + step) * 44100 / RATE) - i44  # 882 frames, sometimes 881/883 like a device block
        aec.far((np.clip(far44[i44:i44 + n44], -1, 1) * 32767).astype("<i2").tobytes(), 44100)
        i44 += n44
        out.append(np.frombuffer(aec.near((echo[i:i + step] * 32767).astype("<i2").tobytes()), dtype="<i2"))
    res = np.concatenate(out).astype(np.float32) / 32768.0
    a = int(2 * RATE)
    erle = 10 * np.log10(np.mean(echo[a:len(res)] ** 2) / np.mean(res[a:] ** 2))
    print(f"\nfar end at 44.1 kHz: ERLE {erle:.1f} dB")
    assert erle >= 20.0


# -- the policies ----------------------------------------------------------------------------------


def test_auto_policy_follows_the_transport():
    class Mic:
        default_echo = "half-duplex"

    assert resolve_policy("auto", Mic()) == "half-duplex"
    assert resolve_policy("auto", object()) == "barge-in"
    assert resolve_policy("aec", object()) == "aec"


def test_aec_on_a_transport_without_a_speaker_reference_fails_clearly(settings_factory):
    from bot.echo import make_echo_policy

    with pytest.raises(VoicebotError, match="barge-in or half-duplex"):
        make_echo_policy(settings_factory(**{"transport.echo": "aec"}), object())


def test_half_duplex_mutes_between_bot_started_and_stopped_plus_tail():
    from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, InputAudioRawFrame
    from pipecat.processors.frame_processor import FrameDirection

    policy = EchoPolicy("half-duplex", tail_secs=0.2)
    loud = InputAudioRawFrame(audio=(np.ones(320) * 1000).astype("<i2").tobytes(), sample_rate=RATE, num_channels=1)

    async def go():
        pushed = []

        async def push(frame, direction=FrameDirection.DOWNSTREAM):
            pushed.append(frame)

        before = await policy._apply(loud)
        policy.push_frame = push  # type: ignore[method-assign]
        policy._FrameProcessor__started = True  # noqa: SLF001 - skip the pipeline's StartFrame
        await policy.process_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)
        muted = await policy._apply(loud)
        await policy.process_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        in_tail = await policy._apply(loud)
        await asyncio.sleep(0.25)
        after = await policy._apply(loud)
        return before, muted, in_tail, after

    before, muted, in_tail, after = asyncio.run(go())
    assert before is loud
    assert muted.audio == bytes(640) and in_tail.audio == bytes(640)
    assert after is loud
    assert policy.muted_secs == pytest.approx(0.04)


def test_a_hung_canceller_falls_back_to_half_duplex_without_stalling_the_loop():
    """The canceller's process stops answering (here: SIGSTOP): the microphone block is not held past
    NEAR_TIMEOUT_SECS, the event loop keeps running meanwhile, and the policy becomes half-duplex."""
    import os
    import signal

    from pipecat.frames.frames import BotStartedSpeakingFrame, InputAudioRawFrame
    from pipecat.processors.frame_processor import FrameDirection

    from bot.aec import NEAR_TIMEOUT_SECS

    aec = WebRtcEchoCanceller(RATE)
    policy = EchoPolicy("aec", reference=EchoReference(), canceller=aec)
    block = InputAudioRawFrame(audio=(np.ones(320) * 1000).astype("<i2").tobytes(), sample_rate=RATE,
                               num_channels=1)

    async def go():
        first = await policy._apply(block)  # a healthy round trip
        os.kill(aec.process.pid, signal.SIGSTOP)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        t0 = time.monotonic()
        second = await policy._apply(block)
        waited = time.monotonic() - t0
        task.cancel()
        policy.push_frame = _discard  # type: ignore[method-assign]
        policy._FrameProcessor__started = True  # noqa: SLF001 - skip the pipeline's StartFrame
        await policy.process_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)
        third = await policy._apply(block)
        return first, second, waited, ticks, third

    try:
        first, second, waited, ticks, third = asyncio.run(go())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(aec.process.pid, signal.SIGCONT)
        aec.close()
    assert first is not None and len(first.audio) == 640
    assert policy.policy == "half-duplex"
    assert second is block  # the bot was not speaking: half-duplex passes the block on
    assert waited < NEAR_TIMEOUT_SECS + 1.5
    assert ticks >= int(NEAR_TIMEOUT_SECS / 0.05) // 2, f"the event loop stalled ({ticks} ticks in {waited:.2f} s)"
    assert third.audio == bytes(640)  # and it mutes while the bot speaks


async def _discard(frame, direction=None):
    return None


def test_half_duplex_in_a_session_ignores_speech_while_the_bot_talks(make_speech, settings_factory, tmp_path):
    """The echo processor sees the output transport's upstream BotStarted/StoppedSpeaking frames: with
    half-duplex the barge-in of tests/test_cascade.py no longer interrupts the bot."""
    from bot.persona import load_persona
    from bot.session import run_file

    long_answer = ("Let me tell you a long story. Once upon a time there was a small robot. "
                   "It lived in a quiet town by the sea. Every morning it walked to the harbour.")
    q = make_speech([(0.3, "Tell me a story."), (8.0, "Please stop, what time is it now?")], total_secs=11.0)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [long_answer, "It is noon."],
                            "transport.echo": "half-duplex"})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))
    first = result.turns[0]
    assert first.t_bot_start is not None and first.t_bot_start < 7.5, "the bot must be talking at 8 s"
    assert len(result.turns) == 1, [t.summary() for t in result.turns]
    assert not result.turns[0].interrupted
    assert result.turns[0].spoken_text == long_answer


def test_reference_pairs_the_speaker_audio_with_the_microphone_block_by_time():
    ref = EchoReference(max_secs=0.1)
    block = bytes(320)  # 10 ms at 16 kHz
    for i in range(5):
        ref.push(block, RATE, t=100.0 + i * 0.01)
    assert len(ref.drain(until=100.02)) == 3  # what was handed to the speaker before the mic block arrived
    assert len(ref.drain(until=100.02)) == 0
    assert len(ref.drain()) == 2
    for i in range(20):  # nobody drains: only the last max_secs are kept
        ref.push(block, RATE, t=200.0 + i * 0.01)
    assert len(ref.drain()) == 10
