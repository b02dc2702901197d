"""The mode extension point: one Mode object per mode, and the SessionHooks contract in every mode.

The hook tests run real sessions on real speech (Piper), the embedded VAD and Whisper, and the local stand-in
servers for audio-llm (tests/fake_audio_llm.py) and realtime (tests/fake_realtime.py, every client event
validated against the openai package's types).
"""

from __future__ import annotations

import asyncio
import json
import typing

import pytest
from pipecat.frames.frames import AggregatedTextFrame, Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from typer.testing import CliRunner

from bot.config import Mode as ModeName
from bot.attention.gate import AttentionGate as ReplyGate
from bot.errors import VoicebotError
from bot.frames import ends_user_turn
from bot.persona import load_persona
from bot.session import Session, run_file
from conftest import word_recall
from pipelines import MODES, SessionHooks, build_pipeline, mode_for
from pipelines.base import BuildContext

PERSONA = load_persona("default")
ANSWER = "Paris is the capital of France."


class Seen(FrameProcessor):
    """A hook that records what it is shown and passes everything on (``hold=True``: holds every transcript
    back, as a reply gate does for a turn it does not answer)."""

    def __init__(self, kind: type[Frame], hold: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.hold = hold
        self.texts: list[str] = []
        self.turn_ends = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if ends_user_turn(frame):
            self.turn_ends += 1
        if isinstance(frame, self.kind) and direction == FrameDirection.DOWNSTREAM:
            self.texts.append(frame.text)
            if self.hold:
                return
        await self.push_frame(frame, direction)


# -- the registry and what each mode says about itself -----------------------------------------------


def test_every_mode_has_one_object_with_honest_capabilities(settings_factory):
    assert set(MODES) == set(typing.get_args(ModeName))
    s = settings_factory()
    caps = {name: mode.capabilities(s) for name, mode in MODES.items()}
    assert caps["pipeline"].has_transcript and caps["pipeline"].text_checkpoint
    assert caps["pipeline"].sections == {"stt", "llm", "tts"}
    assert caps["audio-llm"].sections == {"audio_llm", "stt", "tts"} and not caps["audio-llm"].uses("llm")
    assert caps["realtime"].server_turn_detection and not caps["realtime"].text_checkpoint
    assert caps["realtime"].unused_sections == ["stt", "llm", "audio_llm", "interaction"]
    assert caps["interaction"].text_checkpoint and caps["interaction"].sections == {"interaction", "stt", "tts"}
    # audio-llm without Whisper has no transcript and reads no [stt]
    quiet = settings_factory(**{"audio_llm.transcribe_for_audit": False, "moderation.input.enabled": False})
    assert not MODES["audio-llm"].capabilities(quiet).has_transcript
    assert "stt" in MODES["audio-llm"].capabilities(quiet).unused_sections
    with pytest.raises(VoicebotError, match="unknown mode 'telepathy'.*pipeline, audio-llm, realtime"):
        mode_for("telepathy")


def test_banner_names_only_what_the_mode_uses(settings_factory):
    banner = {name: mode_for(name).describe(settings_factory(mode=name, **{"audio_llm.model": "ultravox"}),
                                            PERSONA).banner() for name in MODES}
    assert banner["pipeline"] == "mode=pipeline persona=Nova llm=embedded"
    assert banner["audio-llm"] == "mode=audio-llm persona=Nova audio-llm=ultravox"
    assert banner["realtime"] == "mode=realtime persona=Nova realtime=gpt-realtime-2.1 holdback=strict"
    assert "llm=" not in banner["realtime"].replace("realtime=", "")


def test_config_show_and_models_follow_the_mode(monkeypatch, tmp_path):
    from bot.cli import app as cli

    monkeypatch.setenv("VOICEBOT_AUDIT__DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(cli, ["config", "show", "--mode", "realtime"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["mode"] == "realtime" and {"realtime", "tts", "vad", "moderation", "discord"} <= set(shown)
    assert not {"stt", "llm", "audio_llm"} & set(shown)
    assert "not used in mode realtime: [stt], [llm], [audio_llm]" in out.stderr
    everything = json.loads(runner.invoke(cli, ["config", "show", "--mode", "realtime", "--all"]).stdout)
    assert {"stt", "llm", "audio_llm", "realtime"} <= set(everything)
    pipeline = json.loads(runner.invoke(cli, ["config", "show"]).stdout)
    assert {"stt", "llm", "tts"} <= set(pipeline) and not {"realtime", "audio_llm"} & set(pipeline)

    out = runner.invoke(cli, ["models", "--mode", "realtime"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "mode realtime"
    assert not any(line.startswith("stt ") for line in lines) and "llm  realtime gpt-realtime-2.1" in out.stdout
    assert "(refusal line and greeting only)" in out.stdout
    out = runner.invoke(cli, ["models"])
    assert "stt  whisper" in out.stdout and "llm  embedded llama.cpp" in out.stdout


def test_hooks_a_mode_cannot_honour_are_refused_in_one_line(settings_factory):
    realtime = settings_factory(mode="realtime", **{"realtime.base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(VoicebotError, match="mode realtime speaks without reply text first.*Seen"):
        build_pipeline(BuildContext(realtime, PERSONA, None, SessionHooks(on_reply_text=[Seen(TranscriptionFrame)])))
    quiet = settings_factory(mode="audio-llm", **{"audio_llm.transcribe_for_audit": False,
                                                  "moderation.input.enabled": False})
    with pytest.raises(VoicebotError, match="audio_llm.transcribe_for_audit = true"):
        build_pipeline(BuildContext(quiet, PERSONA, None, SessionHooks(on_transcript=[Seen(TranscriptionFrame)])))


# -- the hook contract, per mode -----------------------------------------------------------------------


def test_pipeline_hooks_see_the_transcript_the_reply_pieces_and_the_turns(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "What is the capital of France?")])
    heard, pieces = Seen(TranscriptionFrame), Seen(AggregatedTextFrame)
    turns, events = [], []
    hooks = SessionHooks(on_transcript=[heard], on_reply_text=[pieces], on_turn=[turns.append],
                         on_event=[lambda kind, data: events.append(kind)])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [f"{ANSWER} It is on the Seine."]})
    result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav", hooks=hooks))

    [turn] = result.turns
    assert turns == [turn]
    assert word_recall("what is the capital of france", " ".join(heard.texts)) == 1.0
    assert heard.turn_ends >= 1, "the user aggregator's end of turn reaches the transcript processors"
    assert pieces.texts == [ANSWER, "It is on the Seine."] and turn.spoken_text == " ".join(pieces.texts)
    assert {"user.started_speaking", "stt.final", "bot.started_speaking"} <= set(events)


def test_pipeline_turn_held_back_by_a_transcript_hook_is_heard_but_not_answered(make_speech, settings_factory,
                                                                                tmp_path):
    q = make_speech([(0.3, "What is the capital of France?")])
    gate = Seen(TranscriptionFrame, hold=True)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [ANSWER]})
    result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav",
                                  hooks=SessionHooks(on_transcript=[gate], answer_empty_turns=False)))
    [turn] = result.turns
    assert "capital" in turn.transcript.lower() and gate.texts, "the tracker still hears it"
    assert turn.t_llm_start is None and turn.spoken_text == ""
    assert not [m for m in result.context_messages if m["role"] in ("user", "assistant")]


def test_audio_llm_transcript_hook_sees_whisper_transcript(make_speech, settings_factory, tmp_path, monkeypatch):
    from fake_audio_llm import FakeAudioLLM

    monkeypatch.setenv("AUDIO_LLM_TEST_KEY", "sk-test")
    q = make_speech([(0.3, "What is the capital of France?")])
    heard, pieces = Seen(TranscriptionFrame), Seen(AggregatedTextFrame)
    with FakeAudioLLM([ANSWER], api_key="sk-test") as server:
        s = settings_factory(**{"mode": "audio-llm", "audio_llm.model": "fake/ultravox",
                                "audio_llm.base_url": server.base_url, "audio_llm.api_key_env": "AUDIO_LLM_TEST_KEY"})
        result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav",
                                      hooks=SessionHooks(on_transcript=[heard], on_reply_text=[pieces])))
    assert server.errors == [] and result.errors == []
    [turn] = result.turns
    assert word_recall("what is the capital of france", " ".join(heard.texts)) == 1.0
    assert pieces.texts == [ANSWER] and turn.spoken_text == ANSWER
    assert len(server.requests) == 1 and len(server.requests[0].audio) == 1, "the model heard the turn's audio"


@pytest.mark.parametrize("moderate_input", [False, True])
def test_realtime_transcript_hook_gates_the_server_response(moderate_input, make_speech, settings_factory,
                                                            tmp_path):
    """Realtime gives the server's input transcription to the same hook. A turn the gate holds back gets no
    response.create and its item is deleted (the model neither answers nor remembers it); an addressed one is
    answered. With input moderation off the response waits for the transcript and the gate's verdict."""
    from fake_realtime import FakeRealtimeServer, Reply, Scenario

    chatter, question = "I think it will rain later today.", "Nova, what is the capital of France?"
    q = make_speech([(0.3, chatter), (5.5, question)], total_secs=10.5)
    gate = ReplyGate("addressed", ["Nova"])
    heard = Seen(TranscriptionFrame)

    async def go():
        async with FakeRealtimeServer(Scenario(transcripts=[chatter, question], replies=[Reply(text=ANSWER)])) as fake:
            s = settings_factory(mode="realtime", **{"realtime.base_url": fake.base_url,
                                                     "moderation.input.enabled": moderate_input})
            hooks = SessionHooks(on_transcript=[heard, gate])
            return await run_file(s, PERSONA, q, tmp_path / "reply.wav", hooks=hooks), fake

    result, fake = asyncio.run(go())
    assert fake.problems == [] and result.errors == [], (fake.problems, result.errors)
    assert heard.texts == [chatter, question] and heard.turn_ends == 2
    assert gate.passed == 1 and gate.dropped == 1
    first, second = result.turns
    assert first.transcript == chatter and first.t_llm_start is None and first.spoken_text == ""
    assert second.transcript == question and second.spoken_text == ANSWER
    assert len(fake.events("response.create")) == 1
    # The server's VAD may also commit a wordless item (a breath between words): that is deleted too.
    deleted = {e["item_id"] for e in fake.events("conversation.item.delete")}
    committed = [e for c, e in fake.sent if e["type"] == "input_audio_buffer.committed"]
    assert committed[0]["item_id"] in deleted, "the held-back turn is removed from the server"
    assert [m["content"] for m in result.context_messages if m["role"] == "user"] == [question]


def test_session_takes_hooks_for_a_server_transport(settings_factory):
    """What a server transport does: Session(settings, persona, transport, hooks) builds with the hooks placed."""
    from bot.transports.file import FileTransport
    import numpy as np

    gate = Seen(TranscriptionFrame)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [ANSWER]})
    transport = FileTransport(np.zeros(1600, dtype=np.float32), in_rate=16000, out_rate=s.transport.output_sample_rate)
    session = Session(s, PERSONA, transport, hooks=SessionHooks(on_transcript=[gate]))
    procs = session.built.pipeline.processors
    from pipecat.services.stt_service import STTService

    stt = next(i for i, p in enumerate(procs) if isinstance(p, STTService))
    assert procs[stt + 1] is gate


def test_receipt_gives_realtime_its_verdict_even_through_a_barge_in():
    """The realtime service waits on the receipt's verdict; a barge-in (InterruptionFrame) while a slow
    transcript processor works must not lose the transcript or the marker, or the turn would hang unanswered.
    A turn held back yields UserTurnHeldFrame for turn tracking."""
    from pipecat.frames.frames import InterruptionFrame

    from bot.frames import UserTurnHeldFrame, UserTurnTranscribedFrame
    from bot.processors.transcript_receipt import TranscriptReceipt
    from test_discord_support import run_pipeline

    class SlowGate(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.let_through = True

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                await asyncio.sleep(0.3)  # a policy thinking
                if not self.let_through:
                    return
            await self.push_frame(frame, direction)

    gate, receipt = SlowGate(), TranscriptReceipt()
    held: list[Frame] = []

    class After(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, (UserTurnHeldFrame, UserTurnTranscribedFrame)):
                held.append(frame)
            await self.push_frame(frame, direction)

    after = After()

    async def body(worker):
        async def turn(item: str) -> bool:
            verdict = receipt.expect(item)
            transcript = TranscriptionFrame(text="Nova, hello", user_id="user", timestamp="")
            transcript.interruptible = False
            await worker.queue_frames([transcript, UserTurnTranscribedFrame(item_id=item)])
            await asyncio.sleep(0.05)
            await worker.queue_frame(InterruptionFrame())  # the user barges in while the gate is busy
            return await asyncio.wait_for(verdict, timeout=5)

        first = await turn("item_1")
        gate.let_through = False
        second = await turn("item_2")
        await asyncio.sleep(0.1)
        return first, second

    first, second = asyncio.run(run_pipeline([gate, receipt, after], body))
    assert (first, second) == (True, False)
    assert receipt.held == 1 and [type(f) for f in held] == [UserTurnHeldFrame], \
        "the markers stay between the service and the receipt; the held turn is announced once"

