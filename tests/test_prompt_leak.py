"""The persona's instructions are never said: the guard's rules, and what the running cascade played.

The pipeline tests go through the file transport on the real embedded STT/TTS (and, in the last one, the
real embedded SmolLM2); what was played (reply.wav) is transcribed back with Whisper tiny.en.
"""

import asyncio
import time

import pytest
import soundfile as sf

from bot.audit import read_session, verify
from bot.persona import list_personas, load_persona
from bot.prompt_leak import PromptLeakGuard
from bot.session import run_file
from bot.text_split import split_sentences
from conftest import rms, word_recall, words

STYLE_WORDS = {"markdown", "emoji", "emojis", "lists", "bullet"}
"""Words of the shipped style rules that no answer to the test questions has a reason to contain."""


def guard(name: str) -> PromptLeakGuard:
    return PromptLeakGuard.for_persona(load_persona(name))


@pytest.mark.parametrize("name", list_personas())
def test_every_sentence_of_the_style_and_the_prompt_is_recognised(name):
    persona = load_persona(name)
    g = PromptLeakGuard.for_persona(persona)
    for sentence in split_sentences(persona.style):
        assert g.check(sentence), sentence
    for sentence in split_sentences(persona.system_prompt):
        if persona.name.split()[-1] not in sentence:  # who it is may be said
            assert g.check(sentence), sentence
            # ... also when the bot says it of itself
            assert g.check(sentence.replace("You are", "I am").replace("you", "I")), sentence


def test_restatements_are_recognised_and_answers_are_not():
    nova, reed = guard("default"), guard("pirate")
    leak = nova.check("Clear name: no lists, no markdown, no emoji, no code.")  # what was heard in issue 11
    assert leak is not None and "persona's" in leak.reason and "markdown" in leak.matched
    assert nova.check("No lists, markdown, emoji or code.")
    assert nova.check("Clear name: no lists,")  # the first piece of a reply may end at a clause
    assert nova.check("Everything I say will be spoken by a text-to-speech voice.")
    assert reed.check("I answer in one or two short spoken sentences with a pirate flavour.")
    answers = {
        nova: ["The sky on a clear day is blue.", "I'm Nova, a friendly and helpful voice assistant.",
               "The moon is about 384,000 kilometres away.", "Short answer: yes.", "Sure, here is a joke.",
               "You can write a list with one item per line.", "Three plus four is seven."],
        reed: ["Arr, the sky be blue, matey.", "I be a kind old pirate, and helpful too!",
               "Captain Reed at yer service.", "Short and sweet, ye say? Aye.", "The sea be wide and deep.",
               "Text answer one."],
    }
    for g, texts in answers.items():
        for text in texts:
            assert g.check(text) is None, text


def _run(settings, question, reply, persona="default"):
    return asyncio.run(run_file(settings, load_persona(persona), question, reply))


def test_a_restating_piece_is_withheld_not_played_and_audited(make_speech, settings_factory, transcriber,
                                                              tmp_path):
    script = ["Clear name: no lists, no markdown, no emoji, no code. The sky is blue on a clear day."]
    q = make_speech([(0.4, "What is the colour of the sky on a clear day?")])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": script})
    result = _run(s, q, tmp_path / "reply.wav")

    turn = result.turns[0]
    assert turn.spoken_text == "The sky is blue on a clear day."
    # tts.first_chunk = clause: the first piece ends at "lists,"; both pieces of the leak are withheld
    assert " ".join(w["text"] for w in turn.withheld) == "Clear name: no lists, no markdown, no emoji, no code."
    heard = transcriber(tmp_path / "reply.wav")
    assert not STYLE_WORDS & set(words(heard)), heard
    assert word_recall("the sky is blue on a clear day", heard) >= 0.7, heard

    assert verify(result.audit_dir).ok
    session = read_session(result.audit_dir)
    sentences = [r["data"] for r in session.records if r["type"] == "llm.sentence"]
    assert [(x["fate"], x["index"]) for x in sentences] == [("withheld", 0), ("withheld", 1), ("spoken", 2)]
    assert "instructions" in sentences[0]["reason"]
    record = next(r["data"] for r in session.records if r["type"] == "turn")
    assert record["withheld"][0]["reason"] == sentences[0]["reason"]
    assert record["spoken"] == "The sky is blue on a clear day."


def test_a_reply_that_is_all_instructions_says_nothing_and_its_turn_ends(make_speech, settings_factory, tmp_path):
    script = ["Answer in one to three short spoken sentences. Plain words only: no lists, no markdown."]
    q = make_speech([(0.4, "What colour is the sky?")])
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": script, "moderation.output.enabled": False,
                            "transport.max_reply_secs": 45.0})
    started = time.monotonic()
    result = _run(s, q, tmp_path / "reply.wav")

    # The turn ended when its reply did: the session did not wait for a reply to play (max_reply_secs).
    assert time.monotonic() - started < 40.0
    [turn] = result.turns
    assert turn.spoken_text == "" and turn.t_bot_start is None and len(turn.withheld) == 2, turn.summary()
    reply, _ = sf.read(str(tmp_path / "reply.wav"), dtype="float32")
    assert rms(reply) < 1e-4  # nothing was played
    assert verify(result.audit_dir).ok
    record = next(r["data"] for r in read_session(result.audit_dir).records if r["type"] == "turn")
    assert record["spoken"] == "" and [w["index"] for w in record["withheld"]] == [0, 1]


QUESTIONS = ["What is the colour of the sky on a clear day?", "How should I answer a letter from a friend?"]


@pytest.mark.parametrize("name", list_personas())
def test_the_embedded_llm_never_says_the_style(name, make_speech, settings_factory, transcriber, tmp_path):
    """A few questions per shipped persona through the real SmolLM2; benchmarks/prompt_leak.py runs the full
    set. Whatever the model says, what is played must not restate the instructions."""
    g = guard(name)
    q = make_speech([(0.4, QUESTIONS[0]), (9.0, QUESTIONS[1])])
    s = settings_factory(**{"llm.max_tokens": 30})
    result = _run(s, q, tmp_path / "reply.wav", persona=name)

    assert result.turns and any(t.spoken_text for t in result.turns), [t.summary() for t in result.turns]
    heard = transcriber(tmp_path / "reply.wav")
    assert not STYLE_WORDS & set(words(heard)), heard
    assert not [x for x in split_sentences(heard) if g.check(x)], heard
    for turn in result.turns:
        assert not [x for x in turn.spoken if g.check(x)], turn.summary()
