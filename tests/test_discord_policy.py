"""Multi-speaker policy: addressed matching, the reply gate, allow-lists, speaker labels, floor control.

No models: the gate and the input transport run in small pipecat pipelines with synthetic audio.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
from pipecat.frames.frames import (
    Frame,
    TranscriptionFrame,
    UserAudioRawFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.config import load_settings
from bot.discord.audio import SILENT_FRAME, to_discord_frames
from bot.discord.floor import FloorControl
from bot.attention.gate import AttentionGate as ReplyGate  # Discord's reply gate is the attention gate
from bot.attention.gate import ReplyDecisionFrame, is_addressed, wake_names
from bot.discord.policy import AccessPolicy, SpeakerBook
from bot.errors import VoicebotError
from bot.frames import SpeakerFrame
from bot.persona import load_persona
from bot.transports.discord import DiscordTransport
from test_discord_support import run_pipeline, wait_for


class Collect(FrameProcessor):
    def __init__(self, direction: FrameDirection, **kwargs) -> None:
        super().__init__(**kwargs)
        self.direction = direction
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


# --------------------------------------------------------------------------- addressed


@pytest.mark.parametrize("text, expected", [
    ("Nova, what time is it?", True),
    ("hey NOVA what time is it", True),
    ("What time is it, nova?", True),
    ("nova's idea was good", True),       # the name as a word, possessive
    ("I saw a supernova yesterday", False),
    ("novas are bright", False),
    ("What time is it?", False),
    ("", False),
])
def test_addressed_is_a_case_insensitive_whole_word_match(text, expected):
    assert is_addressed(text, ["Nova"]) is expected


def test_addressed_uses_the_personas_name_and_wake_words():
    pirate = load_persona("pirate")
    names = wake_names(pirate)
    assert pirate.name in names
    assert is_addressed(f"ahoy {pirate.name.lower()}, where is the treasure", names)
    # multi-word names match with any punctuation or spacing between the words
    assert is_addressed("okay captain,   reed: hello", ["Captain Reed"])
    assert not is_addressed("the captain read it", ["Captain Reed"])
    custom = load_persona("default").model_copy(update={"wake_words": ["computer", "  "]})
    assert wake_names(custom) == ["Nova", "computer"]
    assert is_addressed("Computer! Lights.", wake_names(custom))


# --------------------------------------------------------------------------- allow-lists and labels


def test_allow_lists():
    open_ = AccessPolicy()
    assert open_.guild_ok(1) and open_.channel_ok(2) and open_.user_ok(3)
    assert not open_.user_ok(None) and not open_.guild_ok(None)
    s = load_settings(None, {"discord.guild_ids": [1], "discord.channel_ids": [10, 11], "discord.user_ids": [7]})
    policy = AccessPolicy.from_config(s.discord)
    assert policy.guild_ok(1) and not policy.guild_ok(2)
    assert policy.channel_ok(11) and not policy.channel_ok(12)
    assert policy.user_ok(7) and not policy.user_ok(8)


def test_allow_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("VOICEBOT_DISCORD__USER_IDS", "[123456789012345678]")
    monkeypatch.setenv("VOICEBOT_DISCORD__RESPOND_TO", "all")
    s = load_settings(None, {})
    assert s.discord.user_ids == [123456789012345678] and s.discord.respond_to == "all"


def test_discord_config_is_validated_and_token_never_in_config():
    with pytest.raises(VoicebotError, match="respond_to"):
        load_settings(None, {"discord.respond_to": "everyone"})
    with pytest.raises(VoicebotError, match="notice"):
        load_settings(None, {"discord.notice": ""})  # recording without notice is not an option
    with pytest.raises(VoicebotError, match="token"):
        load_settings(None, {"discord.token": "abc"})
    s = load_settings(None, {})
    assert s.public_dict()["discord"]["token_env"] == "DISCORD_TOKEN"


def test_speaker_labels_are_stable_for_the_session():
    book = SpeakerBook("name")
    assert book.label(1, "Alice") == "Alice"
    assert book.label(1, "Alice (renamed)") == "Alice", "fixed at first sight"
    assert book.label(2, "Alice") == "Alice (2)", "a clash gets a suffix"
    assert book.label(3, None) == "user:3"
    assert book.label(4, "   Bob \n  Smith ") == "Bob Smith"
    assert book.user_id("Alice (2)") == 2 and book.known(5) is None
    ids = SpeakerBook("id")
    assert ids.label(42, "Alice") == "user:42"


# --------------------------------------------------------------------------- floor control (pure)


def act(last_voice, spurt_start, pending=True):
    return SimpleNamespace(last_voice=last_voice, spurt_start=spurt_start, pending_voice=pending)


def test_floor_first_talker_takes_it_and_keeps_it_while_busy():
    floor = FloorControl(release_secs=1.0)
    users = {1: act(10.0, 9.5), 2: act(10.0, 9.8)}
    change = floor.update(10.0, users, busy=False)
    assert floor.holder == 1 and change.previous is None and change.holder == 1
    assert floor.update(10.02, users, busy=False) is None
    users[1] = act(10.0, 9.5, pending=False)  # stopped talking, everything of theirs was fed
    assert floor.update(10.5, users, busy=False) is None  # silent for less than release_secs
    assert floor.update(12.0, users, busy=True) is None  # pipeline still on their turn: they keep it
    change = floor.update(12.0, users, busy=False)
    assert change.previous == 1 and floor.holder == 2, "the one waiting with unheard speech is next"


def test_floor_is_not_released_while_the_holders_speech_is_still_being_fed():
    floor = FloorControl(release_secs=1.0)
    users = {1: act(10.0, 9.0)}
    floor.update(10.0, users, busy=False)
    assert floor.update(15.0, users, busy=False) is None  # pending_voice: backlog not yet fed
    users[1].pending_voice = False
    assert floor.update(15.0, users, busy=False).holder is None


def test_floor_holder_leaving_releases_at_once():
    floor = FloorControl()
    floor.update(1.0, {1: act(1.0, 0.9)}, busy=True)
    assert floor.update(1.02, {}, busy=True).holder is None
    assert floor.release() is False
    floor.update(2.0, {2: act(2.0, 1.9)}, busy=False)
    assert floor.release(3) is False and floor.release(2) is True and floor.holder is None


# --------------------------------------------------------------------------- reply gate (pipeline)


def run_gate(gate, frames):
    up = Collect(FrameDirection.UPSTREAM)
    down = Collect(FrameDirection.DOWNSTREAM)

    async def body(worker):
        for frame in frames:
            if isinstance(frame, tuple):  # (frame, "up"): pushed upstream from after the gate
                await down.push_frame(frame[0], FrameDirection.UPSTREAM)
            else:
                await worker.queue_frame(frame)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)

    asyncio.run(run_pipeline([up, gate, down], body))
    texts = [f.text for f in down.frames if isinstance(f, TranscriptionFrame)]
    decisions = [(f.reply, f.speaker) for f in up.frames if isinstance(f, ReplyDecisionFrame)]
    return texts, decisions


def tx(text, who="Alice"):
    return TranscriptionFrame(text=text, user_id=who, timestamp="")


def test_gate_all_passes_everything_and_reports_each_decision():
    texts, decisions = run_gate(ReplyGate("all", ["Nova"]), [tx("hello there"), tx("   ")])
    assert texts == ["hello there"]  # an empty transcript is never answered
    assert decisions == [(True, "Alice"), (False, "Alice")]


def test_gate_addressed_holds_unaddressed_speech_and_keeps_the_turn_together():
    frames = [
        tx("what time is it", "Bob"),        # held...
        tx("Nova?", "Bob"),                  # ...released together with this one
        tx("and the date", "Bob"),           # same turn, already addressed: passes
        (UserStoppedSpeakingFrame(), "up"),  # the user aggregator ends the turn
        tx("thanks", "Bob"),                 # a new turn, not addressed: dropped
        SpeakerFrame(speaker="Carol"),
        tx("I like turtles", "Carol"),
    ]
    gate = ReplyGate("addressed", ["Nova"])
    texts, decisions = run_gate(gate, frames)
    assert texts == ["what time is it", "Nova?", "and the date"]
    assert decisions == [(False, "Bob"), (True, "Bob"), (True, "Bob"), (False, "Bob"), (False, "Carol")]
    assert gate.passed == 3 and gate.dropped == 1  # "thanks" was dropped when Carol took the floor


def test_gate_rejects_an_unknown_policy():
    with pytest.raises(ValueError):
        ReplyGate("some", ["Nova"])


# --------------------------------------------------------------------------- floor in the input transport


def test_input_transport_feeds_one_speaker_at_a_time_and_labels_them():
    """Alice talks; Bob starts while she is still talking. The pipeline hears all of Alice, then (after
    she released the floor) all of Bob from the start of his sentence, each labelled, with a SpeakerFrame
    before each speaker; silence while nobody holds the floor."""
    rate = 16000
    alice_sig = (0.3 * np.sin(2 * np.pi * 300 * np.arange(int(1.0 * rate)) / rate)).astype(np.float32)
    bob_sig = (0.3 * np.sin(2 * np.pi * 700 * np.arange(int(1.0 * rate)) / rate)).astype(np.float32)

    async def scenario():
        transport = DiscordTransport(release_secs=0.3, lookback_secs=4.0)
        down = Collect(FrameDirection.DOWNSTREAM)
        floors: list = []
        transport.on_floor = floors.append

        def speak(user_id, name, signal, ssrc_ts):
            frames = to_discord_frames(signal, rate) + [SILENT_FRAME] * 5
            t0 = time.monotonic()
            for i, pcm in enumerate(frames):
                transport.receive(user_id, name, pcm, timestamp=ssrc_ts + 960 * i)
                time.sleep(max(0.0, t0 + 0.02 * (i + 1) - time.monotonic()))

        async def body(_worker):
            assert await wait_for(lambda: transport.running, 5)
            a = asyncio.get_running_loop().run_in_executor(None, speak, 1, "Alice", alice_sig, 1000)
            await asyncio.sleep(0.6)
            b = asyncio.get_running_loop().run_in_executor(None, speak, 2, "Bob", bob_sig, 9000)
            await asyncio.gather(a, b)
            await asyncio.sleep(2.0)

        await run_pipeline([transport.input(), down], body)
        return transport, down.frames, floors

    transport, frames, floors = asyncio.run(scenario())
    assert floors == ["Alice", "Bob", None]  # straight from Alice to Bob (waiting), then free
    speakers = [f.speaker for f in frames if isinstance(f, SpeakerFrame)]
    assert speakers == ["Alice", "Bob"]
    audio = [f for f in frames if isinstance(f, UserAudioRawFrame)]
    by = {name: np.concatenate([np.frombuffer(f.audio, "<i2") for f in audio if f.user_id == name])
          for name in ("Alice", "Bob")}
    # everything each of them said reached the pipeline, Bob's first word included
    for name, freq in (("Alice", 300), ("Bob", 700)):
        voiced = by[name][np.abs(by[name]) > 3000]
        assert len(voiced) > 0.8 * rate * 0.8, name
        spectrum = np.abs(np.fft.rfft(by[name].astype(np.float64)))
        assert abs(np.argmax(spectrum) * rate / len(by[name]) - freq) < 10, name
    # Bob's audio never interleaves with Alice's
    order = [f.user_id for f in audio]
    first_bob = order.index("Bob")
    assert "Alice" not in order[first_bob:]
    assert transport.input().blocks_pushed > 150
