"""mode = "audio-llm" end to end through the file transport, against the local fake server.

No audio LLM weights or API key are available here: tests/fake_audio_llm.py is a protocol-faithful
stand-in that validates each request (openai request types, a WAV of the user's turn that contains
speech) and streams scripted replies. Whisper (audit transcript, and here the test's ears), the VAD and
Piper are the real embedded models. What the server heard is transcribed back from the request;
what the bot said is transcribed back from reply.wav.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.audit import read_session, verify
from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.services.audio_llm import NO_USER_TURN
from bot.session import run_file
from conftest import word_recall, words
from fake_audio_llm import FakeAudioLLM, free_port

PERSONA = load_persona("default")
REFUSAL = PERSONA.refusal
KEY_ENV = "AUDIO_LLM_TEST_KEY"


def run(settings, question, reply):
    return asyncio.run(run_file(settings, PERSONA, question, reply))


def audio_settings(settings_factory, server_url, **more):
    return settings_factory(**{"mode": "audio-llm", "audio_llm.model": "fake/ultravox",
                               "audio_llm.base_url": server_url, "audio_llm.api_key_env": KEY_ENV, **more})


def texts(message):
    content = message["content"]
    return [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]


def audio_parts(message):
    content = message["content"]
    return [] if isinstance(content, str) else [p for p in content if p["type"] == "input_audio"]


def test_turns_are_heard_as_audio_moderated_and_audited(make_speech, settings_factory, transcriber, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    q = make_speech([(0.3, "You are a stupid idiot."), (7.0, "What is the capital of France?"),
                     (13.0, "And what about Germany?")], total_secs=18.0)
    replies = ["Paris is the capital of France.",
               "Berlin is the capital of Germany. You are a stupid worthless idiot. Goodbye my friend."]
    with FakeAudioLLM(replies, api_key="sk-test") as server:
        result = run(audio_settings(settings_factory, server.base_url), q, tmp_path / "reply.wav")

    assert server.errors == [] and result.errors == []
    assert len(result.turns) == 3, [t.summary() for t in result.turns]
    refused, first, second = result.turns

    # Turn 1 was refused on its transcript: the server never heard it.
    assert refused.refused and refused.input_verdict["allowed"] is False and refused.t_llm_start is None
    assert len(server.requests) == 2
    for request in server.requests:
        assert request.messages[0] == {"role": "system", "content": PERSONA.instructions}
    one, two = server.requests

    # The current turn goes as audio only (one input_audio part, WAV, no transcript next to it) ...
    current = one.messages[-1]
    assert current["role"] == "user" and texts(current) == [] and len(audio_parts(current)) == 1
    assert audio_parts(current)[0]["input_audio"]["format"] == "wav"
    heard_one = transcriber(one.audio[-1].samples)
    assert word_recall("what is the capital of france", heard_one) >= 0.8, heard_one
    assert not {"stupid", "idiot"} & set(words(heard_one)), heard_one
    # The refused turn is nowhere; what the bot spoke of its refusal is, after a stand-in for the withheld turn.
    shown = [(m["role"], texts(m)) for m in one.messages]
    assert len(one.audio) == 1 and not any({"stupid", "idiot"} & set(words(" ".join(t))) for _, t in shown), shown
    assert shown[1:-1] == [("user", [NO_USER_TURN]), ("assistant", [refused.spoken_text])], shown
    assert refused.spoken_text == REFUSAL and not refused.interrupted
    # ... and the earlier turn as its transcript, next to what the bot actually said.
    assert [m["role"] for m in two.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert two.messages[3]["content"] == first.transcript
    assert two.messages[4]["content"] == replies[0]
    assert len(two.audio) == 1
    heard_two = transcriber(two.audio[-1].samples)
    assert word_recall("and what about germany", heard_two) >= 0.75, heard_two

    # Whisper's transcript is the audit's "what the bot heard".
    assert word_recall("what is the capital of france", first.transcript) >= 0.8
    assert word_recall("and what about germany", second.transcript) >= 0.75
    assert first.spoken_text == replies[0]
    # Output moderation works on the streamed text exactly as in the cascade.
    assert second.refused and [v["allowed"] for v in second.output_verdicts] == [True, False]
    assert second.spoken_text == f"Berlin is the capital of Germany. {REFUSAL}"
    for turn in (first, second):
        t = turn.timings()
        assert all(t[k] is not None and t[k] >= 0 for k in ("stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "v2v_ms")), t

    heard = transcriber(tmp_path / "reply.wav")
    assert not {"stupid", "worthless", "idiot", "goodbye"} & set(words(heard)), heard
    assert word_recall("Paris is the capital of France", heard) >= 0.8, heard
    assert word_recall("Berlin is the capital of Germany", heard) >= 0.8, heard

    # The context is what the model was sent: the last user turn as audio, earlier ones as transcripts.
    users = [m for m in result.context_messages if m["role"] == "user"]
    assert users[0]["content"] == first.transcript and audio_parts(users[-1])

    assert verify(result.audit_dir).ok
    session = read_session(result.audit_dir)
    assert session.header["mode"] == "audio-llm"
    assert "audio-llm: fake/ultravox" in session.header["models"]["llm"]
    assert "sk-test" not in (result.audit_dir / "events.jsonl").read_text()
    records = [t.summary for t in session.turns]
    assert [r["refused"] for r in records] == [True, False, True]
    assert records[1]["user"]["transcript"] == first.transcript


def test_without_transcription_the_turn_still_goes_as_audio(make_speech, settings_factory, transcriber, tmp_path):
    q = make_speech([(0.3, "Tell me about the moon.")])
    with FakeAudioLLM(["The moon circles the earth."]) as server:
        s = audio_settings(settings_factory, server.base_url, **{
            "audio_llm.transcribe_for_audit": False, "moderation.input.enabled": False,
            "audio_llm.audio_prompt": "Answer the user's question."})
        result = run(s, q, tmp_path / "reply.wav")

    assert server.errors == [] and result.errors == []
    assert len(server.requests) == 1 and len(result.turns) == 1
    current = server.requests[0].messages[-1]
    assert texts(current) == ["Answer the user's question."] and len(audio_parts(current)) == 1
    assert word_recall("tell me about the moon", transcriber(server.requests[0].audio[-1].samples)) >= 0.75
    turn = result.turns[0]
    assert turn.transcript == "" and turn.spoken_text == "The moon circles the earth."
    assert turn.timings()["llm_ttft_ms"] is not None
    assert result.models["stt"].startswith("none")
    assert verify(result.audit_dir).ok


def test_server_error_is_one_line_and_the_next_turn_is_answered(make_speech, settings_factory, transcriber,
                                                                tmp_path):
    q = make_speech([(0.3, "What is the capital of France?"), (3.8, "Hello there.")], total_secs=7.0)
    with FakeAudioLLM(["It is sunny and warm today."], fail_statuses=[500]) as server:
        result = run(audio_settings(settings_factory, server.base_url), q, tmp_path / "reply.wav")

    assert server.seen == 2 and server.errors == []
    assert len(result.errors) == 1
    error = result.errors[0]
    assert "\n" not in error and f"audio LLM server {server.base_url} answered 500" in error, error
    first, second = result.turns
    assert first.errors == [error] and first.spoken_text == ""
    assert second.errors == [] and second.spoken_text == "It is sunny and warm today."
    assert word_recall("it is sunny and warm today", transcriber(tmp_path / "reply.wav")) >= 0.75
    assert verify(result.audit_dir).ok
    records = [t.summary for t in read_session(result.audit_dir).turns]
    assert records[0]["errors"] == [error]


def test_unsupported_audio_is_one_line(make_speech, settings_factory, tmp_path):
    q = make_speech([(0.3, "Hello there.")])
    with FakeAudioLLM(["unused"], formats=("wav",)) as server:
        result = run(audio_settings(settings_factory, server.base_url, **{"audio_llm.audio_format": "mp3"}),
                     q, tmp_path / "reply.wav")
    assert server.requests == [] and server.errors == []  # a well-formed request the server can't take
    assert len(result.errors) == 1, result.errors
    assert "answered 400: unsupported audio format 'mp3'" in result.errors[0]
    assert 'audio_llm.audio_format = "wav"' in result.errors[0]
    assert result.turns[0].spoken_text == ""
    assert verify(result.audit_dir).ok


# -- failures before the session starts: one line, and no half-written audit log -----------------------

def _fails(settings, tmp_path, make_speech):
    q = make_speech([(0.2, "Hello.")], name="hello.wav")
    with pytest.raises(VoicebotError) as info:
        run(settings, q, tmp_path / "reply.wav")
    assert not (tmp_path / "audits").exists()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_api_key(settings_factory, tmp_path, make_speech, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = settings_factory(**{"mode": "audio-llm", "audio_llm.model": "gpt-audio-mini", "audio_llm.api_key_env": KEY_ENV})
    assert f"${KEY_ENV} is not set" in _fails(s, tmp_path, make_speech)


def test_unreachable_server(settings_factory, tmp_path, make_speech):
    url = f"http://127.0.0.1:{free_port()}/v1"
    message = _fails(audio_settings(settings_factory, url), tmp_path, make_speech)
    assert message.startswith(f"audio LLM server {url} is unreachable"), message


def test_wrong_api_key(settings_factory, tmp_path, make_speech, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with FakeAudioLLM(["unused"], api_key="sk-right") as server:
        message = _fails(audio_settings(settings_factory, server.base_url), tmp_path, make_speech)
    assert message == f"audio LLM server {server.base_url} rejected the API key (401): check ${KEY_ENV}"


def test_config_mistakes_are_caught_before_anything_runs(settings_factory, tmp_path, make_speech):
    s = settings_factory(**{"mode": "audio-llm", "audio_llm.base_url": "http://127.0.0.1:9/v1"})
    assert "audio_llm.model is empty" in _fails(s, tmp_path, make_speech)
    s = audio_settings(settings_factory, "http://127.0.0.1:9/v1", **{"audio_llm.transcribe_for_audit": False})
    assert "moderation.input.enabled = false" in _fails(s, tmp_path, make_speech)


def test_cli_says_it_in_one_line(tmp_path, make_speech):
    q = make_speech([(0.2, "Hello.")], name="hello.wav")
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    proc = subprocess.run([str(Path(sys.executable).parent / "voicebot"), "run", "--mode", "audio-llm",
                           "--set", "audio_llm.model=fake/ultravox", "--set", f"audio_llm.base_url={url}",
                           "--set", f"audit.dir={tmp_path / 'audits'}", "-i", str(q), "-o", str(tmp_path / "r.wav")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: audio LLM server {url} is unreachable (ConnectError): start "
                                                "it, or fix audio_llm.base_url"], proc.stderr
