"""mode = "realtime" end to end against the local fake Realtime server (tests/fake_realtime.py).

Spoken questions go through the file transport at real-time pace; the fake answers with Piper speech of
scripted replies (24 kHz, word by word, the transcript just ahead of the audio), and reply.wav is
transcribed back with Whisper to prove what was — and was not — played. Every client event the fake
received is validated against the openai package's models (``fake.problems`` must stay empty).
Nothing here talks to the real OpenAI service.
"""

import asyncio

import pytest
import soundfile as sf

from bot.audit import read_session, verify
from bot.persona import load_persona
from bot.session import run_file
from conftest import rms, word_recall, words
from fake_realtime import FakeRealtimeServer, Reply, Scenario

PERSONA = load_persona("default")
REFUSAL = PERSONA.refusal
ANSWER = "Paris is the capital of France. It is on the river Seine."
UNSAFE = "Paris is the capital of France. You are a stupid worthless idiot. Goodbye my friend."


def run(settings_factory, scenario, question, reply, **overrides):
    async def go():
        async with FakeRealtimeServer(scenario) as fake:
            s = settings_factory(mode="realtime", **{"realtime.base_url": fake.base_url, **overrides})
            result = await run_file(s, PERSONA, question, reply)
            return result, fake

    return asyncio.run(go())


def assistant_said(result):
    return [m["content"] for m in result.context_messages if m["role"] == "assistant"]


def test_refused_input_then_clean_answer(make_speech, settings_factory, transcriber, tmp_path):
    q = make_speech([(0.3, "You are a stupid idiot."), (8.5, "What is the capital of France?")])
    scenario = Scenario(transcripts=["You are a stupid idiot.", "What is the capital of France?"],
                        replies=[Reply(text=ANSWER)])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav")

    assert fake.problems == []
    assert result.errors == [], result.errors
    assert len(result.turns) == 2, [t.summary() for t in result.turns]
    first, second = result.turns
    # Input refused: the model was never asked, its item was deleted, the refusal was spoken locally.
    assert first.refused and first.input_verdict["allowed"] is False and first.t_llm_start is None
    assert first.spoken_text == REFUSAL
    deleted = fake.events("conversation.item.delete")
    assert len(deleted) == 1 and deleted[0]["item_id"].startswith("item_")
    assert len(fake.events("response.create")) == 1
    # The clean answer: checked sentence by sentence, released, played.
    assert word_recall("what is the capital of france", second.transcript) == 1.0
    assert second.spoken_text == ANSWER and second.generated == ANSWER.replace(". ", ".|").split("|")
    assert [v["allowed"] for v in second.output_verdicts] == [True, True]
    assert not second.refused and not second.interrupted and second.errors == []
    t = second.timings()
    for key in ("stt_ms", "llm_ttft_ms", "v2v_ms", "holdback_ms", "holdback_mean_ms", "holdback_max_ms"):
        assert t[key] is not None and t[key] >= 0, (key, t)
    assert 0 < t["holdback_ms"] < t["v2v_ms"]

    heard_first = transcriber(tmp_path / "reply.wav", end=second.speech_start)
    heard_second = transcriber(tmp_path / "reply.wav", start=second.speech_end)
    assert word_recall(REFUSAL, heard_first) >= 0.7, heard_first
    assert word_recall(ANSWER, heard_second) >= 0.8, heard_second
    # What the bot said and heard, as the cascade records it; the model never saw the refused turn.
    assert [m["content"] for m in result.context_messages if m["role"] == "user"] == [second.transcript]
    assert assistant_said(result) == [REFUSAL, ANSWER]

    # The session the server was given: GA shape, create_response off, transcription on.
    [update] = fake.events("session.update")
    audio = update["session"]["audio"]
    assert audio["input"]["turn_detection"]["create_response"] is False and audio["input"]["transcription"]
    assert audio["output"]["voice"] == PERSONA.voices["openai"]

    assert verify(result.audit_dir).ok
    session = read_session(result.audit_dir)
    assert session.header["mode"] == "realtime"
    record = session.turns[1].summary
    assert record["spoken"] == ANSWER and record["timings"]["holdback_ms"] == t["holdback_ms"]


@pytest.mark.parametrize("holdback", ["strict", "monitor"])
def test_unsafe_answer_is_cut_and_the_refusal_spoken(holdback, make_speech, settings_factory, transcriber,
                                                       tmp_path):
    # strict: the fake streams 3x faster than real time, as a model ahead of playback does.
    # monitor: it streams at real time, so audio plays before its sentence is complete and checked.
    speed = 3.0 if holdback == "strict" else 1.0
    q = make_speech([(0.3, "What is the capital of France?")], total_secs=3.5)
    scenario = Scenario(transcripts=["What is the capital of France?"], replies=[Reply(text=UNSAFE, speed=speed)])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav", **{"realtime.holdback": holdback})

    assert fake.problems == [] and result.errors == [], (fake.problems, result.errors)
    [turn] = result.turns
    assert turn.refused and not turn.interrupted
    assert turn.generated[:2] == ["Paris is the capital of France.", "You are a stupid worthless idiot."]
    assert [v["allowed"] for v in turn.output_verdicts] == [True, False]  # the rest was never checked
    assert turn.spoken_text == f"Paris is the capital of France. {REFUSAL}"
    assert assistant_said(result) == [f"Paris is the capital of France. {REFUSAL}"]

    # The model was stopped and told what the user heard: cancel, truncate, the refusal as its line.
    assert fake.cancels == 1
    [truncate] = fake.truncations
    spoken_words = 6 if holdback == "strict" else 12  # monitor played on until sentence 2 was complete
    ms = sum(len(p) for _, p in fake.reply_audio(0).words[:spoken_words]) / 48
    assert truncate["audio_end_ms"] <= ms + 250, (truncate, ms)
    said = [e["item"]["content"][0]["text"] for e in fake.events("conversation.item.create")
            if e["item"]["role"] == "assistant"]
    assert said == [REFUSAL]

    heard = set(words(transcriber(tmp_path / "reply.wav")))
    # (the approved sentence's last word can be cut: see the covering rule in docs/realtime.md)
    assert word_recall("Paris is the capital of", " ".join(heard)) >= 0.6, heard
    assert word_recall(REFUSAL, " ".join(heard)) >= 0.7, heard
    assert "goodbye" not in heard and "friend" not in heard, heard
    if holdback == "strict":
        # Nothing of the failing sentence reached the speaker.
        assert not {"stupid", "worthless", "idiot"} & heard, heard
        assert turn.timings()["holdback_ms"] > 0
    else:
        # monitor plays first and checks alongside: the failing sentence was heard until it was complete.
        assert {"stupid", "worthless"} & heard, heard
        assert turn.timings()["holdback_ms"] < 50
    assert verify(result.audit_dir).ok


@pytest.mark.parametrize("holdback", ["strict", "monitor"])
def test_transcript_lagging_past_max_lag(holdback, make_speech, settings_factory, transcriber, tmp_path):
    q = make_speech([(0.3, "What is the capital of France?")], total_secs=3.5)
    reply = Reply(text=ANSWER, transcript="lag", lag_secs=2.0, speed=2.0)
    scenario = Scenario(transcripts=["What is the capital of France?"], replies=[reply])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav",
                       **{"realtime.holdback": holdback, "realtime.max_lag_ms": 800})

    assert fake.problems == []
    [turn] = result.turns
    reply_audio, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    if holdback == "strict":
        # Audio with no transcript for 0.8 s: dropped unplayed, the response cancelled and truncated at 0 ms.
        assert any("no transcript for" in e for e in turn.errors), turn.errors
        assert rms(reply_audio) < 1e-4 and turn.spoken_text == ""
        assert fake.cancels == 1 and [t["audio_end_ms"] for t in fake.truncations] == [0]
    else:
        # monitor: it plays at once; the late transcript is still checked (and passes).
        assert turn.errors == [] and turn.spoken_text == ANSWER
        assert [v["allowed"] for v in turn.output_verdicts] == [True, True]
        assert word_recall(ANSWER, transcriber(tmp_path / "reply.wav")) >= 0.8
        assert fake.cancels == 0
    assert verify(result.audit_dir).ok


def test_barge_in_cancels_and_truncates_at_the_ms_played(make_speech, settings_factory, tmp_path):
    story = ("Let me tell you a long story. Once upon a time there was a small robot. "
             "It lived in a quiet town by the sea. Every morning it walked to the harbour. "
             "It counted the boats and the birds.")
    q = make_speech([(0.3, "Tell me a story."), (6.0, "What time is it now?")], total_secs=9.5)
    scenario = Scenario(transcripts=["Tell me a story.", "What time is it now?"],
                        replies=[Reply(text=story, speed=1.5), Reply(text="It is noon.")])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav")

    assert fake.problems == [] and result.errors == [], (fake.problems, result.errors)
    assert [t.index for t in result.turns] == [1, 2], [t.summary() for t in result.turns]
    first, second = result.turns
    assert first.interrupted and not second.interrupted
    assert second.spoken_text == "It is noon."
    # Playback stopped at the barge-in: silence until the second answer.
    reply, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    cut = second.vad_start + 0.3
    assert rms(reply[int(cut * rate): int(second.speech_end * rate)]) < 1e-3
    # The server's copy of the story was cut where playback stopped.
    assert fake.cancels == 1
    [truncate] = fake.truncations
    played_ms = read_session(result.audit_dir).turns[0].summary["bot_audio"]["duration_s"] * 1000
    assert abs(truncate["audio_end_ms"] - played_ms) < 150, (truncate, played_ms)  # the audio played, gaps aside
    assert truncate["audio_end_ms"] < truncate["audio_ms"] - 500
    # The context keeps what was played of the story, and the second answer.
    said = assistant_said(result)
    assert said[-1] == "It is noon." and story not in said
    if first.spoken_text:
        assert story.startswith(first.spoken_text) and said[0] == first.spoken_text
    assert verify(result.audit_dir).ok


def test_dropped_connection_reconnects_and_the_next_turn_is_answered(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "What is the capital of France?"), (4.5, "What time is it now?")], total_secs=7.5)
    scenario = Scenario(transcripts=["What is the capital of France?", "What time is it now?"],
                        replies=[Reply(text=ANSWER, drop_after_words=3), Reply(text="It is noon.")])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav")

    assert fake.problems == []
    assert fake.connections == 2 and len(fake.events("session.update")) == 2
    first, second = result.turns
    assert any("dropped (websocket closed, code 1006): reconnecting (attempt 1 of 3)" in e for e in first.errors)
    assert first.spoken_text == ""  # nothing of the unchecked, cut answer was played
    assert second.errors == [] and second.spoken_text == "It is noon."
    # The new server session was given the conversation so far.
    replayed = [e["item"] for e in fake.events("conversation.item.create", connection=2)]
    assert [(i["role"], i["content"][0]["text"]) for i in replayed] == [("user", first.transcript)]
    assert verify(result.audit_dir).ok


def test_server_gone_for_good_ends_the_session_cleanly(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "What is the capital of France?")], total_secs=3.0)
    scenario = Scenario(transcripts=["What is the capital of France?"],
                        replies=[Reply(text=ANSWER, drop_after_words=2)], refuse_after_connections=1)
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav", **{"realtime.max_reconnects": 2})

    assert fake.connections == 1
    assert "gave up after 2 reconnection attempts" in result.errors[-1], result.errors
    assert "HTTP 503" in result.errors[-1]
    check = verify(result.audit_dir)
    assert check.ok and check.ended, check.summary()


def test_server_error_event_is_recorded_and_the_session_goes_on(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "What is the capital of France?")], total_secs=3.0)
    scenario = Scenario(transcripts=["What is the capital of France?"],
                        replies=[Reply(error="The server had an error while processing your request.")])
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply.wav")

    assert fake.problems == []
    [turn] = result.turns
    assert "realtime server error: The server had an error while processing your request. [server_error]" \
        in turn.errors
    assert any(e.startswith("realtime response failed") for e in turn.errors)
    assert turn.spoken_text == ""
    check = verify(result.audit_dir)
    assert check.ok and check.ended


def test_unreachable_server_and_unsupported_audio_fail_in_one_line(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "Hello there.")], total_secs=2.0)
    s = settings_factory(mode="realtime", **{"realtime.base_url": "http://127.0.0.1:9/v1"})
    result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav"))
    assert result.turns == [] and len(result.errors) == 1
    assert result.errors[0] == ("realtime server ws://127.0.0.1:9/v1/realtime is unreachable "
                                "(ConnectionRefusedError): start it or fix realtime.base_url")
    assert verify(result.audit_dir).ok and verify(result.audit_dir).ended

    scenario = Scenario(reject_session="session.audio.input.format")
    result, fake = run(settings_factory, scenario, q, tmp_path / "reply2.wav")
    assert result.turns == [] and len(result.errors) == 1
    assert "does not accept the session's audio (pcm16, 24 kHz)" in result.errors[0]
    assert "\n" not in result.errors[0]
    assert verify(result.audit_dir).ok and fake.events("input_audio_buffer.append") == []
