"""Attention: sound-cue detectors on synthesized alarms, noise, music and speech; the attention gate's decisions
driven with pipecat frames; the whole thing end to end in `voicebot run --input`."""

import asyncio

import numpy as np
import pytest

from bot.attention.cues import RATE, CueDetector, alarm_pattern

rng = np.random.default_rng(7)


def detect(audio: np.ndarray, cues=("smoke-alarm", "co-alarm"), block: int = 320):
    d = CueDetector(list(cues))
    events = []
    for i in range(0, len(audio), block):
        events += d.feed(audio[i:i + block])
    return events


def pad(audio: np.ndarray, lead: float = 2.0) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * RATE), np.float32), audio])


@pytest.mark.parametrize("freq", [3100.0, 3400.0, 520.0])
@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_smoke_alarm_recognised_within_four_seconds(freq, noise):
    audio = pad(alarm_pattern("smoke-alarm", 9.0, freq=freq))
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * noise
    events = detect(audio, block=480)  # 30 ms blocks, not aligned with the detector's frames
    assert [e.cue for e in events] == ["smoke-alarm", "smoke-alarm"], events
    first = events[0]
    assert abs(first.onset - 2.0) < 0.05
    assert first.t - first.onset < 3.4  # leaves time for the alert to start speaking within 4 s of onset


def test_co_alarm_and_its_difference_from_smoke():
    events = detect(pad(alarm_pattern("co-alarm", 7.0, freq=3300.0)))
    assert [e.cue for e in events] == ["co-alarm", "co-alarm"]
    assert events[0].t - events[0].onset < 1.5
    assert detect(pad(alarm_pattern("co-alarm", 7.0)), cues=["smoke-alarm"]) == []
    assert detect(pad(alarm_pattern("smoke-alarm", 9.0)), cues=["co-alarm"]) == []


def test_no_false_alarm_on_noise_music_and_speech(piper):
    """Household noise, a melody with repeated notes, speech, a steady beep and a microwave-like 3-beep done
    with the wrong rhythm: none is a smoke or CO alarm."""
    minute = 60 * RATE
    white = rng.standard_normal(minute).astype(np.float32) * 0.1
    hum = (0.2 * np.sin(2 * np.pi * 50 * np.arange(minute) / RATE)).astype(np.float32)
    notes = []
    for _ in range(240):  # notes repeat often, with the same lengths and gaps as an alarm's
        f = rng.choice([440.0, 523.0, 659.0, 784.0])
        n = int(rng.choice([0.25, 0.5, 0.5]) * RATE)
        notes.append((0.2 * np.sin(2 * np.pi * f * np.arange(n) / RATE) * np.hanning(n)).astype(np.float32))
        notes.append(np.zeros(int(rng.choice([0.0, 0.5]) * RATE), np.float32))
    speech, rate = piper("The smoke from the barbecue drifted over the fence while we talked about the weather.")
    import soxr

    speech = soxr.resample(speech, rate, RATE).astype(np.float32)
    beep = (0.3 * np.sin(2 * np.pi * 3000 * np.arange(3 * RATE) / RATE)).astype(np.float32)  # one long tone
    microwave = np.concatenate([np.concatenate([0.3 * np.sin(2 * np.pi * 2000 * np.arange(int(0.25 * RATE)) / RATE),
                                                np.zeros(int(0.25 * RATE))]) for _ in range(3)]).astype(np.float32)
    tone = (0.2 * np.sin(2 * np.pi * 1000 * np.arange(int(0.15 * RATE)) / RATE)).astype(np.float32)
    train = pad(np.concatenate([np.concatenate([tone, np.zeros_like(tone)]) for _ in range(8)] +
                               [np.zeros(2 * RATE, np.float32)]))  # 8 beeps with CO timing, then quiet
    for name, audio in [("beep train", train), ("white", white), ("hum", hum), ("melody", np.concatenate(notes)),
                        ("speech", np.tile(speech, 4)), ("beep", beep), ("microwave", np.tile(pad(microwave, 3), 5))]:
        assert detect(audio) == [], name


# --------------------------------------------------------------------------- the attention gate


def _gate_run(gate, frames):
    from pipecat.frames.frames import TranscriptionFrame
    from pipecat.processors.frame_processor import FrameDirection

    from bot.attention.gate import ReplyDecisionFrame
    from bot.frames import AttentionDecisionFrame
    from test_discord_policy import Collect
    from test_discord_support import run_pipeline

    up, down = Collect(FrameDirection.UPSTREAM), Collect(FrameDirection.DOWNSTREAM)

    def decided() -> int:
        return sum(isinstance(f, AttentionDecisionFrame) for f in down.frames)

    async def body(worker):
        for frame in frames:
            if callable(frame):
                frame()
            elif isinstance(frame, tuple):
                await down.push_frame(frame[0], FrameDirection.UPSTREAM)
                await asyncio.sleep(0.03)
            else:  # wait until the gate has decided on this transcript before the next step
                before = decided()
                await worker.queue_frame(frame)
                for _ in range(500):
                    if decided() > before:
                        break
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)

    asyncio.run(run_pipeline([up, gate, down], body))
    texts = [f.text for f in down.frames if isinstance(f, TranscriptionFrame)]
    decisions = [(f.decision, f.reason) for f in down.frames if isinstance(f, AttentionDecisionFrame)]
    replies = [f.reply for f in up.frames if isinstance(f, ReplyDecisionFrame)]
    return texts, decisions, replies


def tx(text, who="user"):
    from pipecat.frames.frames import TranscriptionFrame

    return TranscriptionFrame(text=text, user_id=who, timestamp="")


def test_addressed_with_follow_up_window():
    import time

    from pipecat.frames.frames import BotStoppedSpeakingFrame, UserStoppedSpeakingFrame

    from bot.attention.gate import AttentionGate

    gate = AttentionGate("addressed", ["Nova", "computer"], follow_up_secs=1.0)
    texts, decisions, replies = _gate_run(gate, [
        tx("did you buy milk"), (UserStoppedSpeakingFrame(), "up"),            # people talking: silent
        tx("what's the time"), tx("Nova?"), (UserStoppedSpeakingFrame(), "up"),  # held, then released together
        (BotStoppedSpeakingFrame(), "up"),                                     # the bot answered
        tx("and tomorrow?"), (UserStoppedSpeakingFrame(), "up"),               # follow-up: no name needed
        lambda: time.sleep(1.2),
        tx("and the day after"), (UserStoppedSpeakingFrame(), "up"),           # window over: silent
    ])
    assert texts == ["what's the time", "Nova?", "and tomorrow?"]
    assert decisions == [("silent", "not-addressed"), ("silent", "not-addressed"), ("speak", "addressed"),
                         ("speak", "follow-up"), ("silent", "not-addressed")]
    assert replies == [False, False, True, True, False]


def test_relevant_asks_the_judge_and_fails_closed():
    from bot.attention.gate import AttentionGate

    asked = []

    async def judge(text):
        asked.append(text)
        if "slow" in text:
            await asyncio.sleep(5)
        if "broken" in text:
            raise RuntimeError("server down")
        return ("help" in text, "a request for help" if "help" in text else "people chatting")

    from pipecat.frames.frames import UserStoppedSpeakingFrame

    end = (UserStoppedSpeakingFrame(), "up")
    gate = AttentionGate("relevant", ["Nova"], judge=judge, judge_timeout_secs=0.3)
    texts, decisions, _ = _gate_run(gate, [tx("can someone help me with this"), end, tx("nice weather"), end,
                                           tx("Nova, hi"), end, tx("a slow one"), end, tx("broken judge"), end])
    assert texts == ["can someone help me with this", "Nova, hi"]
    assert decisions == [("speak", "relevant"), ("silent", "irrelevant"), ("speak", "addressed"),
                         ("silent", "undecided"), ("silent", "undecided")]
    assert "Nova, hi" not in asked  # the name decides without asking the model


def test_acknowledging_an_alert_mutes_the_cue():
    import time

    from bot.attention.gate import AttentionGate, AttentionState

    state = AttentionState(last_cue_alert=time.monotonic(), last_cue="smoke-alarm")
    gate = AttentionGate("all", ["Nova"], state=state, ack_mute_secs=60)
    texts, decisions, _ = _gate_run(gate, [tx("thanks, I know")])
    assert texts == [] and decisions == [("silent", "acknowledged")]
    assert state.cue_muted("smoke-alarm", time.monotonic())


# --------------------------------------------------------------------------- end to end


def test_run_stays_silent_warns_about_the_alarm_and_answers_when_addressed(piper, tmp_path, transcriber):
    """`voicebot run --input stream.wav` with respond_to=addressed and the smoke cue: two people talk (no
    reply), a smoke alarm sounds while nobody speaks (the alert starts within 4 s of its onset), then the bot
    is asked by name (answered). Heard in reply.wav on the input's timeline; every decision is audited."""
    import soundfile as sf
    import soxr

    from bot.audit import read_session, verify
    from bot.persona import load_persona
    from bot.session import run_file
    from bot.attention.speaker import DEFAULT_LINES
    from conftest import word_recall

    track = np.zeros(int(36 * RATE), np.float32)

    def put(at, text):
        audio, rate = piper(text)
        audio = soxr.resample(audio, rate, RATE).astype(np.float32)
        track[int(at * RATE):int(at * RATE) + len(audio)] += audio

    put(0.5, "Did you remember to buy milk on the way home?")
    put(4.0, "No, I forgot. I will go back after dinner.")
    alarm_at = 8.5
    alarm = alarm_pattern("smoke-alarm", 8.0, level=0.25)
    track[int(alarm_at * RATE):int(alarm_at * RATE) + len(alarm)] += alarm
    put(22.0, "Nova, what is the capital of France?")
    stream = tmp_path / "stream.wav"
    sf.write(stream, track, RATE)

    from bot.config import load_settings

    settings = load_settings(None, {"audit.dir": str(tmp_path / "audits"), "attention.respond_to": "addressed",
                                    "attention.cues": ["smoke-alarm"], "llm.provider": "scripted",
                                    "llm.script": ["Paris is the capital of France."]})
    result = asyncio.run(run_file(settings, load_persona("default"), stream, tmp_path / "reply.wav"))

    answered = [t for t in result.turns if t.spoken_text]
    alert = [t for t in answered if t.initiated_by == "cue:smoke-alarm"]
    assert len(alert) == 1, [(t.index, t.transcript, t.spoken_text, t.initiated_by) for t in result.turns]
    assert alert[0].spoken_text == DEFAULT_LINES["smoke-alarm"]
    assert alert[0].t_bot_start is not None and alert[0].t_bot_start - alarm_at < 4.0, alert[0].t_bot_start
    replies = [t for t in answered if t.initiated_by is None]
    assert [t.spoken_text for t in replies] == ["Paris is the capital of France."], replies
    assert "capital" in replies[0].transcript.lower() and replies[0].speech_start > 21.5
    # The two people were heard and not answered.
    heard_only = [t for t in result.turns if t.transcript and not t.spoken_text]
    assert any("milk" in t.transcript.lower() for t in heard_only), [t.transcript for t in result.turns]

    # What was played: nothing before the alarm, then the alert, then the answer.
    played, rate = sf.read(tmp_path / "reply.wav", dtype="float32")
    assert np.max(np.abs(played[: int(alarm_at * rate)])) < 0.01
    assert word_recall("smoke alarm", transcriber(tmp_path / "reply.wav", start=alarm_at, end=21.5)) == 1.0

    session = read_session(result.audit_dir)
    assert verify(result.audit_dir).ok
    decisions = [r["data"] for r in session.records if r["type"] == "attention.decision"]
    assert {d["reason"] for d in decisions} >= {"not-addressed", "addressed"}, decisions
    assert all(d["decision"] == "silent" for d in decisions if "milk" in d["text"].lower())
    [cue] = [r["data"] for r in session.records if r["type"] == "attention.cue"]
    assert cue["cue"] == "smoke-alarm" and cue["spoken"] and abs(cue["onset_s"] - alarm_at) < 0.1


def test_the_name_alone_is_a_wake_word():
    from pipecat.frames.frames import UserStoppedSpeakingFrame

    from bot.attention.gate import AttentionGate, only_names

    assert only_names("Nova.", ["Nova"]) and only_names("hey Nova?", ["Nova"])
    assert not only_names("Nova, what time is it", ["Nova"])
    end = (UserStoppedSpeakingFrame(), "up")
    gate = AttentionGate("addressed", ["Nova"], follow_up_secs=5.0)
    texts, decisions, _ = _gate_run(gate, [tx("Nova,"), end, tx("what is the capital of France?"), end,
                                           tx("and of Spain?"), end])
    assert texts == ["what is the capital of France?"]
    assert [r for _, r in decisions] == ["wake", "addressed", "not-addressed"]
