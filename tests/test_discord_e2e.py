"""Full turns through the Discord adapters and the real cascade (VAD, whisper, scripted LLM, Piper).

A user's Discord client is simulated at the network boundary: Piper speech, cut into 48 kHz stereo 20 ms
frames, Opus-encoded, sent as RTP packets every 20 ms into py-cord's own receive router, which decodes them
and calls our sink on its thread. The bot's reply leaves as 3840-byte frames read by a player thread every
20 ms; the test Opus-encodes and decodes them as Discord would and transcribes what came out.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from bot.audio import pcm_to_float, resample
from bot.audit import read_session, verify
from bot.discord.app import DiscordApp
from bot.discord.audio import FRAME_BYTES
from bot.persona import load_persona
from conftest import word_recall
from test_discord_support import (
    FakeVoiceClient,
    ctx,
    make_channel,
    make_guild,
    member,
    said,
    speech_frames,
    wait_for,
)

discord = pytest.importorskip("discord")


def heard_by_discord(frames: list[bytes]) -> np.ndarray:
    """What listeners in the channel hear: the frames through Opus and back, as 16 kHz mono float."""
    encoder, decoder = discord.opus.Encoder(), discord.opus.Decoder()
    pcm = b"".join(decoder.decode(encoder.encode(f, 960), fec=False) for f in frames)
    return resample(pcm_to_float(pcm, 2), 48000, 16000)


def test_a_spoken_question_is_answered_in_the_channel_then_forgotten(settings_factory, transcriber):
    answer = "The capital of France is Paris. It is on the river Seine."
    settings = settings_factory(**{"llm.provider": "scripted", "llm.script": [answer],
                                   "discord.respond_to": "all"})

    async def scenario():
        turns = []
        app = DiscordApp(settings, load_persona("default"), turn_listeners=[turns.append])
        alice = member(111, "Alice")
        guild = make_guild(members={111: alice})
        vc = FakeVoiceClient(guild)
        channel = make_channel(guild, vc)
        alice.voice = type("V", (), {"channel": channel})()
        await app.handlers.join(ctx(1, alice))
        session = app.sessions[1]
        try:
            speaker = vc.speak_in_background(111, 4242, speech_frames("What is the capital of France?"))
            assert await wait_for(lambda: any(t.t_bot_stop is not None for t in turns), 60, 0.2), \
                [t.summary() for t in turns]
            speaker.join()
            await asyncio.sleep(0.5)

            c = ctx(1, alice)  # Alice asks to be forgotten
            await app.handlers.forget(c)
            forgot = said(c)
            audit_dir = session.session.audit.dir
            await app.handlers.leave(ctx(1, alice))
        finally:
            await app.close()
        return turns, vc, forgot, audit_dir

    turns, vc, forgot, audit_dir = asyncio.run(scenario())
    assert len(turns) == 1
    turn = turns[0]
    assert turn.speaker == "Alice"
    assert word_recall("what is the capital of france", turn.transcript) >= 0.8, turn.transcript
    assert turn.spoken_text == answer and not turn.interrupted
    assert turn.timings()["v2v_ms"] is not None and turn.timings()["v2v_ms"] < 5000

    # the reply left as Discord frames: exactly 3840 bytes each, and it says the scripted answer
    assert vc.played and all(len(f) == FRAME_BYTES for f in vc.played)
    audio = heard_by_discord(vc.played)
    voiced = np.flatnonzero(np.abs(audio) > 0.02)
    assert len(voiced) and (voiced[-1] - voiced[0]) / 16000 > 2.0
    heard = transcriber(audio)
    assert word_recall(answer, heard) >= 0.8, heard

    # the audit log: labelled turn, the speaker map, then /forget -- and it still verifies
    assert "Deleted 1 audio file of Alice" in forgot
    log = read_session(audit_dir)
    [record] = [t.summary for t in log.turns]
    assert record["speaker"] == "Alice" and record["user"]["transcript"] == turn.transcript
    kinds = [r["type"] for r in log.records]
    assert "discord.speaker" in kinds and "privacy.forget" in kinds
    assert not (audit_dir / record["user"]["audio"]["file"]).exists()
    assert (audit_dir / record["bot_audio"]["file"]).exists()
    checked = verify(audit_dir)
    assert checked.ok and checked.forgotten_audio == 1, checked.problems
    assert checked.ended


def test_two_speakers_floor_control_and_addressed_replies(settings_factory, tmp_path):
    """Alice chats (not addressed); Bob starts before she has finished and addresses the bot by its wake
    word. Both are heard in turn, each labelled; only Bob is answered."""
    persona_file = tmp_path / "nova.yaml"
    persona_file.write_text(json.dumps({"name": "Nova", "system_prompt": "You are Nova.",
                                        "wake_words": ["computer"]}))
    answer = "The capital of France is Paris."
    settings = settings_factory(**{"llm.provider": "scripted", "llm.script": [answer], "persona": str(persona_file),
                                   "discord.respond_to": "addressed"})

    async def scenario():
        turns = []
        app = DiscordApp(settings, load_persona(str(persona_file)), turn_listeners=[turns.append])
        alice, bob = member(111, "Alice"), member(222, "Bob")
        guild = make_guild(members={111: alice, 222: bob})
        vc = FakeVoiceClient(guild)
        session = await app.join(make_channel(guild, vc))
        try:
            a_frames = speech_frames("I think it will rain later today.")
            b_frames = speech_frames("Computer, what is the capital of France?")
            a = vc.speak_in_background(111, 1001, a_frames)
            await asyncio.sleep(len(a_frames) * 0.02 - 0.5)  # Bob starts while Alice is finishing
            b = vc.speak_in_background(222, 2002, b_frames)
            assert await wait_for(lambda: any(t.t_bot_stop is not None for t in turns), 60, 0.2), \
                [t.summary() for t in turns]
            a.join()
            b.join()
            await asyncio.sleep(0.3)
        finally:
            await app.close()
        return turns, session.session.result.audit_dir

    turns, audit_dir = asyncio.run(scenario())
    by_speaker = {t.speaker: t for t in turns}
    assert set(by_speaker) == {"Alice", "Bob"}, [(t.speaker, t.transcript) for t in turns]
    assert [t.speaker for t in sorted(turns, key=lambda t: t.index)] == ["Alice", "Bob"]
    assert "rain" in by_speaker["Alice"].transcript.lower()
    assert by_speaker["Alice"].spoken_text == "" and by_speaker["Alice"].t_llm_start is None, "not addressed"
    assert "capital" in by_speaker["Bob"].transcript.lower()
    assert by_speaker["Bob"].spoken_text == answer
    log = read_session(audit_dir)
    assert [t.summary["speaker"] for t in log.turns] == ["Alice", "Bob"]
    speakers = {r["data"]["speaker"]: r["data"]["user_id"] for r in log.records if r["type"] == "discord.speaker"}
    assert speakers == {"Alice": 111, "Bob": 222}
    assert verify(audit_dir).ok


def message(author, channel, content: str, *, mentions=(), reply_to=None):
    """A Discord text message as py-cord hands it to on_message; replying is the network boundary."""
    from types import SimpleNamespace
    from unittest.mock import AsyncMock

    reference = SimpleNamespace(resolved=reply_to) if reply_to is not None else None
    return SimpleNamespace(author=author, channel=channel, guild=channel.guild, content=content,
                           mentions=list(mentions), reference=reference,
                           reply=AsyncMock(return_value=SimpleNamespace(id=555)))


def test_text_messages_join_the_voice_conversation(settings_factory):
    """Alice speaks; Bob types to the bot in the voice channel's chat. One conversation: Bob's text turn
    sees Alice's voice turn, its reply is moderated before it is posted, and the audit log holds both turns
    with their modality."""
    from types import SimpleNamespace

    # The voice and text paths run the same configured model; a scripted one runs its script once per path.
    answer = "Paris, I believe. You are a stupid idiot."
    settings = settings_factory(**{"llm.provider": "scripted", "discord.respond_to": "all", "llm.script": [answer]})
    refusal = load_persona("default").refusal

    async def scenario():
        turns = []
        app = DiscordApp(settings, load_persona("default"), turn_listeners=[turns.append])
        me = SimpleNamespace(id=4000, bot=True, display_name="Nova")
        app.client = SimpleNamespace(user=me, get_channel=lambda _id: None)
        alice, bob = member(111, "Alice"), member(222, "Bob")
        guild = make_guild(members={111: alice, 222: bob})
        vc = FakeVoiceClient(guild)
        channel = make_channel(guild, vc)
        elsewhere = make_channel(guild, vc, channel_id=99, name="random")
        session = await app.join(channel)
        try:
            speaker = vc.speak_in_background(111, 1001, speech_frames("What is the capital of France?"))
            assert await wait_for(lambda: any(t.t_bot_stop is not None for t in turns), 60, 0.2), \
                [t.summary() for t in turns]
            speaker.join()

            ignored = [message(bob, channel, "what did she ask?"),  # not addressed
                       message(bob, elsewhere, "<@4000> what did she ask?", mentions=[me]),  # not served here
                       message(me, channel, "<@4000> talking to myself", mentions=[me])]  # the bot itself
            for m in ignored:
                await app.on_message(m)
            asked = message(bob, channel, "<@4000> what did Alice ask?", mentions=[me])
            await app.on_message(asked)
            await app.on_message(message(bob, channel, "", mentions=[me],
                                         reply_to=SimpleNamespace(author=me)))  # an empty reply: nothing to say
        finally:
            await app.close()
        return turns, session, ignored, asked

    turns, session, ignored, asked = asyncio.run(scenario())
    assert all(m.reply.await_count == 0 for m in ignored)
    asked.reply.assert_awaited_once()
    posted = asked.reply.call_args.args[0]
    assert posted == f"Paris, I believe. {refusal}"  # the insult was blocked before posting, as before speaking
    assert asked.reply.call_args.kwargs == {"mention_author": False}

    # Bob's text turn saw Alice's voice turn: one context
    sent = session.text.chat.client.calls[-1]
    contents = [m["content"] for m in sent if m["role"] != "system"]
    assert "capital of france" in contents[0].lower() and contents[1].startswith("Paris, I believe.")
    assert "stupid" not in contents[1]
    assert contents[-1] == "what did Alice ask?"

    log = read_session(session.session.result.audit_dir)
    records = [t.summary for t in log.turns]
    assert [(r["turn"], r["speaker"], r["modality"]) for r in records] == [(1, "Alice", "voice"), (2, "Bob", "text")]
    assert records[1]["refused"] and records[1]["spoken"] == posted and records[1]["bot_audio"] is None
    speakers = {r["data"]["speaker"]: r["data"]["user_id"] for r in log.records if r["type"] == "discord.speaker"}
    assert speakers == {"Alice": 111, "Bob": 222}
    assert verify(session.session.result.audit_dir).ok
