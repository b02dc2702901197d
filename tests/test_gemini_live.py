"""mode = "realtime", realtime.provider = "gemini": end to end against a local Live API stand-in
(tests/fake_gemini_live.py) through the google-genai SDK, with the same moderated hold-back as OpenAI's.

The stand-in sends the model's output transcription *after* the audio it describes (Gemini does not order
them); reply.wav is transcribed back to prove what was — and was not — played. Nothing here talks to Google.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.audit import read_session, verify
from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.realtime.holdback import Chunker, HoldBack
from bot.session import run_file
from conftest import word_recall, words

genai = pytest.importorskip("google.genai")

from fake_gemini_live import FakeGeminiLive, GeminiReply, GeminiScenario, field_of, make_certificate  # noqa: E402


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def run(settings_factory, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the SDK trusts the stand-in's certificate

    def go(scenario, question, reply, **overrides):
        async def main():
            async with FakeGeminiLive(scenario, certificate) as fake:
                s = settings_factory(mode="realtime", **{"realtime.provider": "gemini",
                                                         "realtime.base_url": fake.base_url, **overrides})
                result = await run_file(s, PERSONA, question, reply)
                return result, fake

        return asyncio.run(main())

    return go

PERSONA = load_persona("default")
REFUSAL = PERSONA.refusal
ANSWER = "Paris is the capital of France. It is on the river Seine."
START = 2.5
"""The question starts once the session is surely connected: audio sent before the Live API connection is up
is not heard (connecting through TLS and the SDK takes seconds on a loaded two-core machine)."""
WAIT = 12.0
"""Length of the question file: the user stays silent after asking, so the session does not end before Gemini
(whose input transcript only comes with its answer) has answered, even on a loaded machine."""
UNSAFE = "Paris is the capital of France. You are a stupid worthless idiot. Goodbye my friend."


def test_clean_answer_is_held_until_its_transcript_passed_then_played(make_speech, run, transcriber, tmp_path):
    q = make_speech([(START, "What is the capital of France?")], total_secs=WAIT)
    scenario = GeminiScenario(transcripts=["What is the capital of France?"], replies=[GeminiReply(ANSWER)])
    result, fake = run(scenario, q, tmp_path / "reply.wav")

    assert fake.problems == []
    assert result.errors == [], result.errors
    (turn,) = result.turns
    assert turn.transcript == "What is the capital of France?"
    assert turn.input_verdict is not None and turn.input_verdict["allowed"] is True, (turn.summary(), [t.summary() for t in result.turns])
    assert turn.spoken_text == ANSWER and [v["allowed"] for v in turn.output_verdicts] == [True, True]
    t = turn.timings()
    assert t["holdback_ms"] is not None and t["holdback_ms"] > 0
    heard = transcriber(tmp_path / "reply.wav", start=turn.speech_end)
    assert word_recall(ANSWER, heard) >= 0.8, heard

    # What the SDK set up: 16 kHz in, audio out in the persona's voice, both transcriptions, server VAD.
    (setup,) = fake.setups
    assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-09-2025"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert field_of(setup, "generationConfig", "speechConfig", "voiceConfig", "prebuiltVoiceConfig",
                    "voiceName") == "Puck"
    assert "inputAudioTranscription" in setup and "outputAudioTranscription" in setup
    assert field_of(setup, "realtimeInputConfig", "automaticActivityDetection", "disabled") is False
    assert field_of(setup, "realtimeInputConfig", "activityHandling") == "START_OF_ACTIVITY_INTERRUPTS"
    assert "Nova" in setup["systemInstruction"]["parts"][0]["text"]
    assert fake.mime_types == {"audio/pcm;rate=16000"} and fake.audio_chunks > 100
    assert result.models["llm"].startswith("realtime gemini gemini-2.5-flash-native-audio-preview-09-2025 at wss://")
    assert verify(result.audit_dir).ok


def test_unsafe_answer_plays_no_unsafe_audio(make_speech, run, transcriber, tmp_path):
    """The unsafe sentence's audio arrives before its transcript: none of the answer is played, the refusal is."""
    q = make_speech([(START, "Tell me about Paris.")], total_secs=WAIT)
    scenario = GeminiScenario(transcripts=["Tell me about Paris."], replies=[GeminiReply(UNSAFE)])
    result, fake = run(scenario, q, tmp_path / "reply.wav")

    assert fake.problems == []
    assert len(result.turns) == 1, (result.errors, [m for m in fake.sent if "modelTurn" not in str(m)][:12],
                                    fake.audio_chunks)
    (turn,) = result.turns
    assert turn.refused
    verdicts = [v["allowed"] for v in turn.output_verdicts]
    assert verdicts[:2] == [True, False]
    assert turn.spoken_text == REFUSAL  # whole-transcript rule: not even the first (clean) sentence played
    heard = transcriber(tmp_path / "reply.wav", start=turn.speech_end)
    assert not {"stupid", "worthless", "idiot", "goodbye", "paris"} & set(words(heard)), heard
    assert word_recall(REFUSAL, heard) >= 0.7, heard
    # The model is told what was said instead, without being asked to answer it.
    told = [(c.turns[0].role, c.turns[0].parts[0].text, c.turn_complete) for c in fake.client_content]
    assert ("model", REFUSAL, False) in told
    record = read_session(result.audit_dir).turns[0].summary
    assert record["refused"] and record["modality"] == "voice"
    assert verify(result.audit_dir).ok


def test_transcript_that_never_comes_drops_the_audio_after_max_lag(make_speech, run, tmp_path):
    q = make_speech([(START, "What is the capital of France?")], total_secs=WAIT)
    scenario = GeminiScenario(transcripts=["What is the capital of France?"],
                              replies=[GeminiReply(ANSWER, transcript="none")])
    result, fake = run(scenario, q, tmp_path / "reply.wav", **{"realtime.max_lag_ms": 800})
    (turn,) = result.turns
    assert turn.spoken_text == ""
    assert any("no transcript for" in e and "dropped unplayed" in e for e in result.errors), result.errors
    import soundfile as sf

    reply, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    assert float(abs(reply).max(initial=0.0)) < 0.01, "no model audio may be played"


def test_unordered_transcript_needs_the_whole_transcript():
    """Why ordered=False: audio of sentence 2 arriving before sentence 1's transcript ended would be released
    by sentence 1 passing under the ordered (OpenAI) rule."""
    def feed(hb):
        hb.add_audio(b"\x01\x00" * 100, 0.0)  # sentence 1's audio
        hb.add_audio(b"\x02\x00" * 100, 0.1)  # sentence 2's audio, before any transcript
        (first,) = hb.add_text("Paris is nice. ", 0.2)
        (second,) = hb.add_text("You are an idiot.", 0.3)
        return second, hb.passed(first, 0.4)

    _, released = feed(HoldBack("strict", chunker=Chunker()))
    assert sum(len(p.pcm) for p in released) == 400  # ordered rule: sentence 2's audio released unchecked
    _, released = feed(HoldBack("strict", chunker=Chunker(), ordered=False))
    assert released == []
    hb = HoldBack("strict", chunker=Chunker(), ordered=False)
    second, _ = feed(hb)
    assert hb.finish_text(0.5) == [] and hb.release(0.5) == []  # the transcript is complete, not all passed
    assert sum(len(p.pcm) for p in hb.passed(second, 0.6)) == 400  # all of it once everything passed


def test_missing_key_fails_in_one_line(settings_factory, monkeypatch):
    from bot.realtime.gemini import GeminiConnector

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    s = settings_factory(mode="realtime", **{"realtime.provider": "gemini"})
    with pytest.raises(VoicebotError, match=r"\$GEMINI_API_KEY is not set"):
        GeminiConnector(s.realtime, PERSONA)
