"""End to end through the file transport on the real embedded models (VAD, whisper, SmolLM2, Piper).

Questions are synthesized, fed at real-time pace, and the bot's reply.wav is transcribed back.
"""

import asyncio

import numpy as np
import pytest
import soundfile as sf

from bot.audit import verify
from bot.persona import load_persona
from bot.session import run_file
from conftest import rms, word_recall


def run(settings, question, reply, persona="default"):
    return asyncio.run(run_file(settings, load_persona(persona), question, reply))


def test_scripted_reply_is_spoken_after_the_question(make_speech, settings_factory, transcriber, tmp_path):
    answer = "The capital of France is Paris. It is on the river Seine."
    q = make_speech([(0.5, "What is the capital of France?")], rate=44100, channels=2)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [answer]})
    result = run(s, q, tmp_path / "reply.wav")

    assert result.errors == []
    assert len(result.turns) == 1
    turn = result.turns[0]
    assert word_recall("what is the capital of france", turn.transcript) >= 0.8
    assert turn.spoken_text == answer and turn.generated == split(answer)
    timings = turn.timings()
    for key in ("stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "v2v_ms"):
        assert timings[key] is not None and timings[key] >= 0, key

    # reply.wav shares the question's timeline: silence while the user speaks, then the answer.
    reply, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    assert rms(reply[: int(turn.speech_end * rate)]) < 1e-4
    first = np.flatnonzero(np.abs(reply) > 0.01)[0] / rate
    assert turn.speech_end < first < turn.speech_end + 5.0
    assert abs(first - (turn.speech_end + timings["v2v_ms"] / 1000)) < 0.15
    heard = transcriber(tmp_path / "reply.wav")
    assert word_recall(answer, heard) >= 0.8, heard

    # The conversation context holds what was said on both sides.
    assert result.context_messages[-1] == {"role": "assistant", "content": answer}
    assert verify(result.audit_dir).ok


def split(text):
    from bot.turns import split_sentences

    return split_sentences(text)


def test_embedded_llm_answers_a_spoken_question(make_speech, settings_factory, transcriber, tmp_path):
    q = make_speech([(0.4, "Can you tell me something about the moon?")], rate=16000)
    s = settings_factory(**{"llm.max_tokens": 40, "llm.temperature": 0.0})
    result = run(s, q, tmp_path / "reply.wav")

    assert result.errors == []
    assert len(result.turns) == 1, [t.summary() for t in result.turns]
    turn = result.turns[0]
    assert "moon" in turn.transcript.lower()
    assert turn.spoken_text.strip(), "the embedded model produced no speech"
    assert result.models["llm"].startswith("embedded: SmolLM2")
    heard = transcriber(tmp_path / "reply.wav")
    # What the speaker played is what the log says the bot said (ASR slack allowed).
    assert word_recall(turn.spoken_text, heard) >= 0.6, (turn.spoken_text, heard)


def test_barge_in_stops_playback_and_context_keeps_only_what_was_played(make_speech, settings_factory,
                                                                         tmp_path):
    long_answer = ("Let me tell you a long story. Once upon a time there was a small robot. "
                   "It lived in a quiet town by the sea. Every morning it walked to the harbour. "
                   "It counted the boats and the birds. Then it went home and slept.")
    q = make_speech([(0.3, "Tell me a story."), (8.0, "What time is it now?")], total_secs=12.0)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [long_answer, "It is noon."]})
    result = run(s, q, tmp_path / "reply.wav")

    assert [t.index for t in result.turns] == [1, 2], [t.summary() for t in result.turns]
    first, second = result.turns
    assert first.interrupted and not second.interrupted
    assert first.t_bot_start < 8.0
    # Playback stopped: the bot was silent between the barge-in and its next answer.
    reply, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    cut = second.vad_start + 0.3
    assert rms(reply[int(cut * rate): int((second.speech_end or cut + 1) * rate)]) < 1e-3
    assert first.spoken_text != long_answer and long_answer.startswith(first.spoken_text)
    assert second.spoken_text == "It is noon."
    # The LLM context remembers only what was actually played of the interrupted answer.
    assistant = [m["content"] for m in result.context_messages if m["role"] == "assistant"]
    assert long_answer not in assistant
    assert assistant[-1] == "It is noon."
    if first.spoken_text:
        assert assistant[0] == first.spoken_text


def test_no_speech_fails_clearly(settings_factory, tmp_path):
    silent = tmp_path / "silence.wav"
    sf.write(str(silent), np.zeros(16000 * 2, dtype=np.float32), 16000)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": ["unused"]})
    result = run(s, silent, tmp_path / "reply.wav")
    assert result.turns == [] and (tmp_path / "reply.wav").is_file()
