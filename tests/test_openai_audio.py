"""stt.provider = "openai" and tts.provider = "openai": pipecat's OpenAI STT/TTS services against a local
server speaking /v1/audio/transcriptions and /v1/audio/speech, its requests validated with the `openai`
package's own types (tests/fake_openai_audio.py). A whole spoken turn runs through them; nothing here
talks to OpenAI itself."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.session import run_file
from pipelines import mode_for
from conftest import word_recall
from fake_openai_audio import FakeOpenAIAudio

REPLY = "The capital of France is Paris. It is a lovely city."


@pytest.fixture(scope="module")
def whisper():
    """The server's recogniser: the bot's own short-window Whisper (a 30 s window is slow enough on a busy
    CPU that pipecat closes the turn before the transcript arrives)."""
    from bot.config import STTConfig
    from bot.services.stt import make_stt

    service, _ = make_stt(STTConfig())
    service._load()  # our own service's model loader (bot/services/stt.py)

    def transcribe(samples: np.ndarray) -> str:
        return service.transcribe_pcm((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())

    return transcribe


def test_a_spoken_turn_through_openai_compatible_stt_and_tts(make_speech, settings_factory, tmp_path, whisper,
                                                             piper, transcriber):
    question = make_speech([(0.5, "What is the capital of France?")], total_secs=9.0)
    with FakeOpenAIAudio(whisper, piper, api_key="sk-local-test") as server:
        settings = settings_factory(**{
            "llm.provider": "scripted", "llm.script": [REPLY],
            "stt.provider": "openai", "stt.base_url": server.base_url, "stt.api_key_env": "TEST_SPEECH_KEY",
            "tts.provider": "openai", "tts.base_url": server.base_url, "tts.api_key_env": "TEST_SPEECH_KEY",
            "tts.model": "kokoro"})
        import os

        os.environ["TEST_SPEECH_KEY"] = "sk-local-test"
        try:
            mode_for(settings).preflight(settings)  # both servers answer /v1/models with the key
            result = asyncio.run(run_file(settings, load_persona("default"), question, tmp_path / "reply.wav"))
        finally:
            del os.environ["TEST_SPEECH_KEY"]
    assert not server.errors, server.errors
    # STT: the segment went up as a 16 kHz mono WAV, the server's text is the turn's transcript.
    assert server.transcriptions, "no transcription request"
    req = server.transcriptions[0]
    assert (req["model"], req["language"], req["rate"], req["channels"]) == ("whisper-1", "en", 16000, 1)
    assert 1.0 < req["secs"] < 6.0
    turn = result.turns[0]
    assert word_recall("capital of France", turn.transcript) >= 0.6, turn.transcript
    assert turn.transcript == req["text"].strip()
    # TTS: each moderated piece was a /v1/audio/speech request (pcm, the persona's openai voice, our model).
    spoken = [s["input"] for s in server.speeches]
    assert " ".join(spoken).split() == REPLY.split()
    assert {(s["model"], s["voice"], s["response_format"]) for s in server.speeches} == {("kokoro", "alloy", "pcm")}
    assert turn.spoken_text == REPLY and result.models["tts"].startswith("openai kokoro voice alloy")
    # What was played is that speech, on the input's timeline.
    heard = transcriber(tmp_path / "reply.wav")
    assert word_recall(REPLY, heard) >= 0.7, heard
    assert turn.timings()["v2v_ms"] is not None


def test_openai_speech_errors_are_one_line(settings_factory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from bot.services.stt import make_stt
    from bot.services.tts import make_tts

    persona = load_persona("default")
    with pytest.raises(VoicebotError, match=r"stt.provider = openai needs an API key in \$OPENAI_API_KEY"):
        make_stt(settings_factory(**{"stt.provider": "openai"}).stt)
    with pytest.raises(VoicebotError, match=r"tts.provider = openai needs an API key"):
        make_tts(settings_factory(**{"tts.provider": "openai"}).tts, persona)
    with pytest.raises(VoicebotError, match="not an OpenAI speech voice"):
        make_tts(settings_factory(**{"tts.provider": "openai", "tts.base_url": "http://127.0.0.1:9/v1",
                                     "tts.voice": "af_heart"}).tts, persona)
    dead = settings_factory(**{"llm.provider": "scripted", "llm.script": ["Hi."], "stt.provider": "openai",
                               "stt.base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(VoicebotError, match=r"STT server http://127.0.0.1:9/v1 is unreachable .*stt.base_url"):
        mode_for(dead).preflight(dead)
    with FakeOpenAIAudio(lambda s: "", lambda t: (np.zeros(10, np.float32), 24000), api_key="right") as server:
        monkeypatch.setenv("OPENAI_API_KEY", "wrong")
        with pytest.raises(VoicebotError, match=r"TTS server .* rejected the API key: check \$OPENAI_API_KEY"):
            scripted = settings_factory(**{"llm.provider": "scripted", "llm.script": ["Hi."],
                                           "tts.provider": "openai", "tts.base_url": server.base_url})
            mode_for(scripted).preflight(scripted)
