"""Moderation in the running cascade, proven on the audio: what was blocked was never played.

Spoken questions go through the file transport on the real embedded STT/TTS with a scripted LLM that
answers with unsafe sentences; reply.wav is transcribed back.
"""

import asyncio

from bot.audit import read_session, verify
from bot.persona import load_persona
from bot.session import run_file
from conftest import word_recall, words

REFUSAL = load_persona("default").refusal


def run(settings, question, reply):
    return asyncio.run(run_file(settings, load_persona("default"), question, reply))


def test_blocked_sentence_is_never_spoken_and_refusal_is(make_speech, settings_factory, transcriber, tmp_path):
    script = ["The capital of France is Paris. You are a stupid worthless idiot. Goodbye my friend."]
    q = make_speech([(0.4, "What is the capital of France?")])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": script})
    result = run(s, q, tmp_path / "reply.wav")

    turn = result.turns[0]
    assert turn.refused
    assert turn.generated == ["The capital of France is Paris.", "You are a stupid worthless idiot.",
                              "Goodbye my friend."]
    assert [v["allowed"] for v in turn.output_verdicts] == [True, False]  # the rest was dropped unchecked
    assert turn.spoken_text == f"The capital of France is Paris. {REFUSAL}"

    heard = transcriber(tmp_path / "reply.wav")
    heard_words = set(words(heard))
    assert not {"stupid", "worthless", "idiot", "goodbye"} & heard_words, heard
    assert {"capital", "paris"} <= heard_words, heard  # the allowed sentence was spoken (tiny.en hears
    # "France is" as "Francis", so its content words are what is checked)
    assert word_recall(REFUSAL, heard) >= 0.7, heard

    # The LLM context holds what was spoken, not what was generated.
    said = [m["content"] for m in result.context_messages if m["role"] == "assistant"]
    assert said == [f"The capital of France is Paris. {REFUSAL}"]

    # The audit log has every verdict, verifiable.
    assert verify(result.audit_dir).ok
    session = read_session(result.audit_dir)
    record = session.turns[0].summary
    assert record["refused"] and record["output_verdicts"][1]["allowed"] is False
    assert record["output_verdicts"][1]["text"] == "You are a stupid worthless idiot."
    kinds = [r["type"] for r in session.records]
    assert kinds.count("moderation.verdict") == 3  # input + two output sentences
    assert kinds.count("llm.sentence") == 3


def test_unsafe_user_turn_is_refused_and_never_reaches_the_llm(make_speech, settings_factory, transcriber,
                                                                tmp_path):
    q = make_speech([(0.3, "You are a stupid idiot."), (7.0, "What is the capital of France?")],
                    total_secs=11.5)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": ["The first answer.", "The second answer."]})
    result = run(s, q, tmp_path / "reply.wav")

    assert len(result.turns) == 2, [t.summary() for t in result.turns]
    first, second = result.turns
    assert first.refused and first.input_verdict["allowed"] is False and not first.interrupted
    assert first.t_llm_start is None and first.spoken_text == REFUSAL
    # The LLM's first call answered the second question: it never saw the first.
    assert second.spoken_text == "The first answer."
    users = [m["content"] for m in result.context_messages if m["role"] == "user"]
    assert not any("idiot" in u.lower() for u in users) and len(users) == 1
    heard = transcriber(tmp_path / "reply.wav", end=second.speech_start)
    assert word_recall(REFUSAL, heard) >= 0.7, heard


def test_moderator_that_cannot_decide_blocks(make_speech, settings_factory, transcriber, tmp_path):
    # detoxify without a local checkpoint cannot load: every check fails, so nothing generated is spoken.
    q = make_speech([(0.3, "Tell me about the weather.")])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": ["It is sunny and warm today."],
                            "moderation.output.backends": ["detoxify"],
                            "moderation.input.backends": ["keywords"]})
    result = run(s, q, tmp_path / "reply.wav")

    turn = result.turns[0]
    assert turn.refused and turn.spoken_text == REFUSAL
    verdict = turn.output_verdicts[0]
    assert verdict["allowed"] is False and "failing closed" in verdict["reason"]
    heard = transcriber(tmp_path / "reply.wav")
    assert not {"sunny", "warm"} & set(words(heard)), heard


def test_a_first_clause_is_checked_and_spoken_on_its_own(make_speech, settings_factory, transcriber, tmp_path):
    # tts.first_chunk = clause (the default) speaks a reply's opening clause before its sentence is complete;
    # each piece is still checked before it is synthesized, so an unsafe rest of the sentence is never heard.
    script = ["Well, as far as I know, you are a stupid worthless idiot. Goodbye my friend."]
    q = make_speech([(0.4, "What do you think of me?")])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": script})
    result = run(s, q, tmp_path / "reply.wav")

    turn = result.turns[0]
    assert turn.generated == ["Well, as far as I know,", "you are a stupid worthless idiot.", "Goodbye my friend."]
    assert [v["allowed"] for v in turn.output_verdicts] == [True, False]
    assert turn.spoken_text == f"Well, as far as I know, {REFUSAL}"
    heard = set(words(transcriber(tmp_path / "reply.wav")))
    assert not {"stupid", "worthless", "idiot", "goodbye"} & heard, heard
    assert {"far", "know"} <= heard, heard
