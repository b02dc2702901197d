"""End of turn on paused speech, in the whole cascade: synthesized speech through the file transport.

A mid-clause pause must not be answered; a user who goes on after the turn ended continues that turn
(its answer withdrawn, audited); no stage timing is ever negative.
"""

import asyncio
import json

import numpy as np

from bot.persona import load_persona
from bot.session import run_file
from conftest import words


def voiced_len(piper, text):
    audio, rate = piper(text)
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return (voiced[-1] + 1) / rate


def audit_events(result, kind):
    lines = (result.audit_dir / "events.jsonl").read_text().splitlines()
    return [r["data"] for r in map(json.loads, lines) if r["type"] == kind]


def assert_no_negative_timing(result):
    for turn in result.turns:
        timings = turn.timings()
        assert all(v is None or v >= 0 for v in timings.values()), (turn.index, timings)
    for summary in audit_events(result, "turn"):
        assert all(v is None or v >= 0 for v in summary["timings"].values()), summary["timings"]


def test_a_pause_mid_clause_is_not_answered_the_whole_question_is_answered_once(
        make_speech, piper, settings_factory, tmp_path):
    # "I was wondering if, [0.8 s] maybe, you could tell me the capital of France?" The pause is longer
    # than the VAD stop plus the ordinary end-of-turn wait (0.2 + 0.3 s): only the transcript, ending on
    # "if", says the user is not done.
    first = "I was wondering if,"
    resume = 0.4 + voiced_len(piper, first) + 0.8
    q = make_speech([(0.4, first), (resume, "maybe, you could tell me the capital of France?")], total_secs=9.0)
    s = settings_factory(**{"llm.provider": "scripted",
                            "llm.script": ["Paris is the capital of France.", "This is a second reply."]})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    assert len(result.turns) == 1, [t.transcript for t in result.turns]
    turn = result.turns[0]
    heard = set(words(turn.transcript))
    assert {"wondering", "france"} <= heard, turn.transcript
    assert turn.spoken_text == "Paris is the capital of France." and not turn.withdrawn
    assert [m["content"] for m in result.context_messages if m["role"] == "assistant"] == [
        "Paris is the capital of France."]
    assert_no_negative_timing(result)
    timings = turn.timings()
    assert timings["v2v_ms"] is not None and timings["tts_ttfa_ms"] is not None, timings


REPLY = "Let me think about it for a moment, then I will answer."


def test_going_on_after_the_turn_ended_withdraws_its_answer_and_joins_the_turn(
        make_speech, piper, settings_factory, tmp_path):
    # Without the extra wait for unfinished clauses (off here), the turn ends in the 1.1 s pause and its
    # answer starts. The user goes on within vad.resume_secs: that answer is withdrawn (cut, out of the
    # context, audited) and the whole of what was said is answered once, as one turn.
    first = "So the thing is,"
    resume = 0.4 + voiced_len(piper, first) + 1.1
    q = make_speech([(0.4, first), (resume, "I need a good book for a long train ride.")], total_secs=10.0)
    # The scripted LLM answers the same point of the conversation with the same reply: the withdrawn
    # answer and the final one are both REPLY, so what shows the withdrawal is that it is recorded once as
    # withdrawn and that the context holds the answer once.
    s = settings_factory(**{"llm.provider": "scripted", "vad.unfinished_wait_secs": 0,
                            "llm.script": [REPLY]})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    assert len(result.turns) == 1, [t.transcript for t in result.turns]
    turn = result.turns[0]
    assert {"thing", "book", "ride"} <= set(words(turn.transcript)), turn.transcript
    assert len(turn.withdrawn) == 1, turn.withdrawn
    assert " ".join(turn.withdrawn[0]["generated"]) == REPLY, turn.withdrawn
    assert turn.spoken_text == REPLY
    assistants = [m["content"] for m in result.context_messages if m["role"] == "assistant"]
    assert assistants == [REPLY], assistants  # the withdrawn answer (the part played) left the context
    users = " ".join(m["content"] for m in result.context_messages if m["role"] == "user")
    assert "thing" in users and "book" in users, users
    withdrawn = audit_events(result, "answer.withdrawn")
    assert len(withdrawn) == 1 and withdrawn[0]["turn"] == 1 and withdrawn[0]["reason"] == "user_resumed"
    [summary] = audit_events(result, "turn")
    assert summary["withdrawn"] == turn.withdrawn and summary["spoken"] == REPLY
    assert_no_negative_timing(result)


LONG_REPLY = ("Paris is the capital of France. It is a big old city on the river Seine. "
              "Many people visit it every year to see the tower. The food there is very good. "
              "In spring the parks are full of flowers.")


def test_a_noise_that_cuts_the_bot_off_is_a_false_interruption_and_the_bot_resumes(
        make_speech, piper, settings_factory, transcriber, tmp_path):
    # A short murmur with no words (reversed speech: the VAD takes it for speech, Whisper hears none)
    # while the bot answers: the barge-in cuts the answer, no transcript comes, and the bot says the rest
    # again from the sentence that was cut. No second LLM answer is asked for.
    question = "What is the capital of France?"
    blip, rate = piper("Hmm, hmm.")
    q = make_speech([(0.4, question)], total_secs=18.0)
    import soundfile as sf

    audio, q_rate = sf.read(str(q), dtype="float32")
    assert q_rate == rate
    # 4 s after the question the bot is well into its 12 s answer, even on a loaded CPU
    at = int((0.4 + voiced_len(piper, question) + 4.0) * rate)
    audio[at:at + len(blip)] += 0.5 * blip[::-1]  # at half level Whisper finds no words in it, whatever the padding
    sf.write(str(q), audio, rate)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": [LONG_REPLY, "This is a second reply."]})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    # Whisper tiny finds no words in this murmur in some VAD cuts of it and a word ("my", "night") in
    # others, so both outcomes are checked: no words -> the bot resumes; words -> a real interruption.
    first = result.turns[0]
    assert first.interrupted, [(t.transcript, t.spoken_text, t.interrupted) for t in result.turns]
    resumed = audit_events(result, "answer.resumed")
    heard_words = [e["text"] for e in audit_events(result, "stt.final")][1:]
    heard = set(words(transcriber(tmp_path / "reply.wav")))
    if heard_words:  # a real interruption: answered as a turn of its own, nothing resumed
        assert not resumed and len(result.turns) == 2 and result.turns[1].resumes is None
        assert "tower" not in heard, heard
    else:
        assert len(resumed) == 1 and resumed[0]["of_turn"] == 1, resumed
        second = result.turns[1]
        assert second.resumes == 1 and second.transcript == ""
        assert LONG_REPLY.endswith(second.spoken_text) and second.spoken_text, second.spoken_text
        assert {"tower", "flowers"} <= heard and "second" not in heard, heard
    assert_no_negative_timing(result)
