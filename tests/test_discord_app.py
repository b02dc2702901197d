"""Slash commands, the join notice, allow-lists and member events, with Discord mocked at the network
boundary only (channel.connect / channel.send / the interaction's respond and defer, and the voice UDP
socket, see test_discord_support.py). py-cord's own Bot registers the commands."""

from __future__ import annotations

import asyncio
import time
import typing
from types import SimpleNamespace
from unittest.mock import AsyncMock

import pytest

from bot.audit import read_session, verify
from bot.config import Mode
from bot.discord.app import DiscordApp, make_client, run_bot
from bot.attention.gate import AttentionGate as ReplyGate
from bot.errors import VoicebotError
from bot.persona import load_persona
from test_discord_support import FakeVoiceClient, ctx, make_channel, make_guild, member, said, wait_for

discord = pytest.importorskip("discord")


def app_for(settings_factory, **overrides) -> DiscordApp:
    base = {"llm.provider": "scripted", "llm.script": ["Hello."], "discord.respond_to": "all"}
    base.update(overrides)
    return DiscordApp(settings_factory(**base), load_persona("default"))


def run_app(app: DiscordApp, scenario) -> None:
    """Run ``scenario`` and always leave every channel, so a failing assertion cannot leave a pipeline
    running (asyncio.run cancelling all of pipecat's tasks at once can hang)."""

    async def main():
        try:
            await scenario()
        finally:
            await app.close()

    asyncio.run(main())


def test_join_posts_the_notice_before_recording_then_persona_mode_and_leave(settings_factory, tmp_path):
    app = app_for(settings_factory)

    async def scenario():
        guild = make_guild()
        vc = FakeVoiceClient(guild)
        order: list[str] = []
        start_recording = vc.start_recording
        vc.start_recording = lambda sink, after=None: (order.append("record"), start_recording(sink, after))
        send = AsyncMock(side_effect=lambda text: order.append("notice") or SimpleNamespace(id=77))
        channel = make_channel(guild, vc, send=send)
        alice = member(1, "Alice", channel)

        c = ctx(1, alice)
        await app.handlers.join(c)
        c.defer.assert_awaited_once_with(ephemeral=True)
        assert "Joined General as Nova" in said(c) and "answering everyone" in said(c)
        assert order == ["notice", "record"], "nothing is recorded before the notice is posted"
        notice = send.call_args.args[0]
        assert "Nova is listening in General" in notice and "recorded, transcribed" in notice
        session = app.sessions[1]
        first_dir = session.session.audit.dir
        header = read_session(first_dir).header
        assert header["discord"] == {"guild_id": 1, "channel_id": 10, "channel": "General", "respond_to": "all",
                                     "notice": ["77"]}
        assert any(isinstance(p, ReplyGate) for p in session.session.built.pipeline.processors)

        c = ctx(1, alice)
        await app.handlers.join(c)
        assert "already in General" in said(c)

        c = ctx(1, alice)
        await app.handlers.mode(c, "telepathy")
        assert "unknown mode 'telepathy'" in said(c)

        c = ctx(1, alice)
        await app.handlers.persona(c, "pirate")
        assert "Now Captain" in said(c) and "new audit session" in said(c)
        assert send.await_count == 2, "a new session gets its own notice"
        assert session.session.audit.dir != first_dir
        assert verify(first_dir).ok and verify(first_dir).ended

        c = ctx(1, alice)
        await app.handlers.forget(c)
        assert "Nothing to forget" in said(c)

        c = ctx(1, alice)
        await app.handlers.leave(c)
        assert "Left the voice channel" in said(c)
        assert 1 not in app.sessions and vc.disconnect.await_count == 1
        second = read_session(session.session.result.audit_dir)
        assert second.end is not None and second.header["persona"]["name"] != "Nova"

        c = ctx(1, alice)
        await app.handlers.leave(c)
        assert "not in a voice channel" in said(c)

    run_app(app, scenario)


def test_no_notice_means_no_recording(settings_factory, tmp_path):
    app = app_for(settings_factory)

    async def scenario():

        async def build_session(*_a, **_k):
            raise AssertionError("no session may be built when the notice could not be posted")

        app.build_session = build_session
        guild = make_guild()
        vc = FakeVoiceClient(guild)
        forbidden = discord.Forbidden(SimpleNamespace(status=403, reason="Forbidden"), "Missing Permissions")
        channel = make_channel(guild, vc, send=AsyncMock(side_effect=forbidden))
        c = ctx(1, member(1, "Alice", channel))
        await app.handlers.join(c)
        assert "could not post the recording notice" in said(c) and "nothing was recorded" in said(c)
        assert vc.disconnect.await_count == 1 and vc.sinks == []
        assert app.sessions == {}

    run_app(app, scenario)
    assert not (tmp_path / "audits").exists() or not any((tmp_path / "audits").iterdir())


def test_allow_lists_and_preconditions_refuse_clearly(settings_factory):
    app = app_for(settings_factory, **{"discord.guild_ids": [1], "discord.channel_ids": [10],
                                       "discord.user_ids": [1]})

    async def scenario():
        guild = make_guild()
        vc = FakeVoiceClient(guild)
        allowed = make_channel(guild, vc)
        other = make_channel(guild, vc, channel_id=11, name="Secret")
        cases = [
            (ctx(2, member(1, "Alice", allowed)), app.handlers.join, "not enabled on this server"),
            (ctx(1, member(9, "Mallory", allowed)), app.handlers.join, "not on this bot's list"),
            (ctx(1, member(1, "Alice", other)), app.handlers.join, "not allowed to join Secret"),
            (ctx(1, member(1, "Alice")), app.handlers.join, "Join a voice channel first"),
            (ctx(1, member(1, "Alice")), app.handlers.leave, "not in a voice channel"),
            (ctx(1, member(1, "Alice")), app.handlers.forget, "No session is running"),
            (ctx(9, member(1, "Alice")), app.handlers.forget, "not enabled on this server"),
        ]
        for c, handler, expected in cases:
            await handler(c)
            assert expected in said(c), (handler.__name__, said(c))
        c = ctx(1, member(1, "Alice"))
        await app.handlers.persona(c, "pirate")
        assert "/join first" in said(c)
        assert allowed.connect.await_count == 0 and other.connect.await_count == 0
        with pytest.raises(VoicebotError, match="allow-lists"):
            await app.join(other)
        # the sink drops the audio of users who are not on the list before it is buffered anywhere
        sink = app.make_sink(lambda *a: pytest.fail("must not be delivered"))
        sink.write(SimpleNamespace(pcm=b"\0" * 3840, packet=None), SimpleNamespace(id=9))
        assert sink.dropped == 1

    run_app(app, scenario)


def test_slash_commands_are_registered_with_pycord(settings_factory):
    app = app_for(settings_factory, **{"discord.guild_ids": [123]})

    async def build():  # py-cord's Client wants a running loop, as in run_bot()
        return make_client(app)

    bot = asyncio.run(build())
    commands = {c.name: c for c in bot.pending_application_commands}
    assert set(commands) == {"join", "leave", "mode", "persona", "forget"}
    assert all(c.guild_ids == [123] for c in commands.values()), "guild-scoped: available at once"
    persona = commands["persona"].options[0]
    assert persona.name == "name" and {c.name for c in persona.choices} >= {"default", "pirate"}
    assert [c.name for c in commands["mode"].options[0].choices] == list(typing.get_args(Mode))
    assert bot.intents.voice_states and bot.intents.guilds
    assert not bot.intents.message_content and not bot.intents.members, "no privileged intents"


def test_configured_channel_is_joined_at_start_then_members_leave_and_the_bot_is_disconnected(settings_factory):
    app = app_for(settings_factory, **{"discord.voice_channel_id": 10})
    guild = make_guild()
    vc = FakeVoiceClient(guild)
    channel = make_channel(guild, vc)
    app.client = SimpleNamespace(user=SimpleNamespace(id=999), get_channel={10: channel}.get)

    async def scenario():
        await app.on_ready()
        session = app.sessions[1]
        await app.on_ready()  # a gateway reconnect fires on_ready again: no second join
        assert channel.connect.await_count == 1 and channel.send.await_count == 1
        transport = session.transport
        transport.input().on_voice(5, "Alice", b"\x00\x10" * 1920, 0, time.monotonic())  # Alice talks...
        assert await wait_for(lambda: transport.floor_holder == "Alice", 2)
        alice = SimpleNamespace(id=5, guild=guild)
        await app.on_voice_state_update(alice, SimpleNamespace(channel=channel), SimpleNamespace(channel=None))
        assert transport.input().floor.holder is None and 5 not in transport.input().streams
        me = SimpleNamespace(id=999, guild=guild)
        await app.on_voice_state_update(me, SimpleNamespace(channel=channel), SimpleNamespace(channel=None))
        assert app.sessions == {}
        assert verify(session.session.result.audit_dir).ended

    run_app(app, scenario)


def test_mode_switch_to_realtime_and_audio_llm_runs_and_answers_in_the_channel(settings_factory, monkeypatch):
    """Issue 11: /mode realtime used to leave the bot in the channel with nothing running. Now every mode
    starts, hears Alice through py-cord's receive path and answers her in the channel; the reply gate is a
    session hook each mode places on its own transcript (realtime: the server's input transcription)."""
    from fake_audio_llm import FakeAudioLLM
    from fake_realtime import FakeRealtimeServer, Reply, Scenario
    from pipecat.services.stt_service import STTService

    from bot.realtime.service import RealtimeService, TranscriptReceipt
    from test_discord_support import speech_frames

    question = "Nova what is the capital of France?"
    answer = "Paris is the capital of France."
    monkeypatch.setenv("AUDIO_LLM_TEST_KEY", "sk-test")

    async def scenario():
        turns, audit_dirs = [], []
        async with FakeRealtimeServer(Scenario(transcripts=[question], replies=[Reply(text=answer)])) as fake:
            with FakeAudioLLM([answer], api_key="sk-test") as audio_llm:
                settings = settings_factory(**{"llm.provider": "scripted", "llm.script": ["Hello."],
                                               "discord.respond_to": "addressed",
                                               "realtime.base_url": fake.base_url,
                                               "audio_llm.model": "fake/ultravox",
                                               "audio_llm.base_url": audio_llm.base_url,
                                               "audio_llm.api_key_env": "AUDIO_LLM_TEST_KEY"})
                app = DiscordApp(settings, load_persona("default"), turn_listeners=[turns.append])
                alice = member(111, "Alice")
                guild = make_guild(members={111: alice})
                vc = FakeVoiceClient(guild)
                alice.voice = SimpleNamespace(channel=make_channel(guild, vc))
                try:
                    await app.handlers.join(ctx(1, alice))
                    frames = speech_frames(question)
                    for mode, ssrc in (("realtime", 4001), ("audio-llm", 4002)):
                        c = ctx(1, alice)
                        await app.handlers.mode(c, mode)
                        assert f"mode {mode}" in said(c), said(c)
                        channel_session = app.sessions[1]
                        procs = channel_session.session.built.pipeline.processors
                        gate = next(i for i, p in enumerate(procs) if isinstance(p, ReplyGate))
                        if mode == "realtime":
                            assert isinstance(procs[gate - 1], RealtimeService)
                            assert isinstance(procs[gate + 1], TranscriptReceipt)
                        else:
                            assert isinstance(procs[gate - 1], STTService)
                        vc.played.clear()
                        before = len(turns)
                        speaker = vc.speak_in_background(111, ssrc, frames)
                        assert await wait_for(lambda: any(t.t_bot_stop is not None for t in turns[before:]), 60,
                                              0.2), (mode, [t.summary() for t in turns])
                        speaker.join()
                        answered = [t for t in turns[before:] if t.spoken_text]
                        assert [t.spoken_text for t in answered] == [answer], (mode, [t.summary() for t in turns])
                        assert answered[0].speaker == "Alice" and "nova" in answered[0].transcript.lower()
                        assert "capital" in " ".join(t.transcript for t in turns[before:]).lower()
                        assert vc.played, f"{mode}: the answer left as Discord frames"
                        audit_dirs.append(channel_session.session.result.audit_dir)
                        assert read_session(audit_dirs[-1]).header["mode"] == mode
                finally:
                    await app.close()
                assert all(verify(d).ok and verify(d).ended for d in audit_dirs)
        assert fake.problems == [] and len(fake.events("response.create")) == 1
        assert audio_llm.errors == [] and len(audio_llm.requests) == 1

    asyncio.run(scenario())


def test_failed_mode_switch_keeps_the_channel_running(settings_factory, monkeypatch):
    """A mode that cannot start (here: realtime on OpenAI without a key) is refused in one line before the
    running session is stopped."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    app = app_for(settings_factory)

    async def scenario():
        guild = make_guild()
        vc = FakeVoiceClient(guild)
        alice = member(1, "Alice", make_channel(guild, vc))
        await app.handlers.join(ctx(1, alice))
        running = app.sessions[1].session
        c = ctx(1, alice)
        await app.handlers.mode(c, "realtime")
        assert "OPENAI_API_KEY" in said(c), said(c)
        assert app.sessions[1].session is running and app.sessions[1].settings.mode == "pipeline"
        task = app.sessions[1]._task
        assert task is not None and not task.done(), "the running session was not stopped"

    run_app(app, scenario)


def test_missing_token_fails_in_one_line_naming_the_variable(settings_factory, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    settings = settings_factory()
    with pytest.raises(VoicebotError, match=r"\$DISCORD_TOKEN"):
        asyncio.run(run_bot(settings, load_persona("default")))


def test_cli_discord_command_without_token(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bot.cli import app as cli

    secret = "MTIz.secret-token-value"
    monkeypatch.setenv("VOICEBOT_AUDIT__DIR", str(tmp_path))
    monkeypatch.setenv("MY_TOKEN", secret)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    runner = CliRunner()
    out = runner.invoke(cli, ["discord", "--help"])
    assert out.exit_code == 0 and "DISCORD_TOKEN" in out.output
    out = runner.invoke(cli, ["discord", "--set", "llm.provider=scripted"])
    assert out.exit_code != 0
    assert "DISCORD_TOKEN" in str(out.exception) or "DISCORD_TOKEN" in out.output
    # the config names the variable, never the token; `config show` masks nothing it doesn't have
    out = runner.invoke(cli, ["config", "show", "--set", "discord.token_env=MY_TOKEN"])
    assert out.exit_code == 0 and '"token_env": "MY_TOKEN"' in out.output and secret not in out.output


# --------------------------------------------------------------------------- text replies: what was posted


def text_session(settings_factory, script: list[str]):
    """A channel session whose text turns are answered (scripted LLM, default moderation) into their own
    context and turn tracker; Discord is the message's ``reply`` (an AsyncMock, the network boundary)."""
    from pipecat.processors.aggregators.llm_context import LLMContext

    from bot.discord.app import ChannelSession
    from bot.text_chat import TextConversation
    from bot.turns import AnchoredClock, TurnTracker

    app = app_for(settings_factory, **{"llm.script": script})
    guild = make_guild()
    session = ChannelSession(app, make_channel(guild, FakeVoiceClient(guild)), app.settings, app.persona)
    tracker = TurnTracker(AnchoredClock(), lambda: None, vad_start_secs=0.2, vad_stop_secs=0.2)
    events: list[tuple[str, dict]] = []
    tracker.emit = lambda kind, **data: events.append((kind, data))  # type: ignore[method-assign]
    turns: list = []
    tracker.turn_listeners.append(turns.append)
    session.text = TextConversation(app.settings, app.persona, LLMContext(), tracker)
    return session, turns, events


def ask_in_discord(session, reply_mock) -> str | None:
    from bot.discord.text import TextMessage

    bob = member(222, "Bob")
    message = SimpleNamespace(author=bob, reply=reply_mock)
    return asyncio.run(session.answer_text(message, TextMessage(author_id=222, author_name="Bob", channel_id=10,
                                                                text="tell me a long story")))


def test_a_long_text_reply_is_posted_whole_in_several_messages(settings_factory):
    sentences = [f"Sentence number {i} of a long and rather peaceful story about a quiet little garden."
                 for i in range(40)]
    answer = " ".join(sentences)
    assert len(answer) > 3000
    session, turns, _ = text_session(settings_factory, [answer])
    reply = AsyncMock(return_value=SimpleNamespace(id=555))

    posted = ask_in_discord(session, reply)

    parts = [c.args[0] for c in reply.call_args_list]
    assert len(parts) == 2 and all(len(p) <= 2000 for p in parts), [len(p) for p in parts]
    assert " ".join(parts) == answer == posted  # nothing cut off, nothing lost between the messages
    assert all(c.kwargs == {"mention_author": False} for c in reply.call_args_list)
    (turn,) = turns
    assert turn.spoken_text == answer
    assert session.text.context.get_messages()[-1] == {"role": "assistant", "content": answer}


def test_a_reply_that_could_not_be_posted_is_not_recorded_as_said(settings_factory):
    session, turns, events = text_session(settings_factory, ["Paris is the capital of France."])
    reply = AsyncMock(side_effect=RuntimeError("403 Forbidden (error code: 50013): Missing Permissions"))

    posted = ask_in_discord(session, reply)

    assert posted is None
    (turn,) = turns
    assert turn.spoken_text == "" and turn.queued == []
    assert any("could not post the reply (RuntimeError)" in e for e in turn.errors), turn.errors
    assert all(m["role"] != "assistant" for m in session.text.context.get_messages())  # the LLM won't think it said it
    fates = [d["fate"] for kind, d in events if kind == "llm.sentence"]
    assert fates == ["dropped"]
    assert ("error", "post") in [(kind, d.get("stage")) for kind, d in events]


def test_when_the_second_message_fails_only_the_first_is_recorded(settings_factory):
    sentences = [f"Sentence number {i} of a long and rather peaceful story about a quiet little garden."
                 for i in range(40)]
    session, turns, events = text_session(settings_factory, [" ".join(sentences)])
    reply = AsyncMock(side_effect=[SimpleNamespace(id=555), RuntimeError("503 Service Unavailable")])

    posted = ask_in_discord(session, reply)

    first = reply.call_args_list[0].args[0]
    assert posted == first and len(first) <= 2000
    (turn,) = turns
    assert turn.spoken_text == first
    assert session.text.context.get_messages()[-1] == {"role": "assistant", "content": first}
    fates = [d["fate"] for kind, d in events if kind == "llm.sentence"]
    n = len(first.split(". "))
    assert fates == ["posted"] * n + ["dropped"] * (40 - n)
