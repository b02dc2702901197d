"""mode = "audio-llm" without models: turn-audio matching, the history policy, audio encoding, error lines,
and the fake server's own validation (so a passing end-to-end test means a well-formed request)."""

import asyncio
import base64
import io

import numpy as np
import openai
import pytest
import soundfile as sf

from bot.config import load_settings
from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.processors.turn_audio import HeardSpeech, Segment
from bot.services.audio_llm import (EARLIER_TURN, NO_USER_TURN, AudioLLMService, alternate, audio_data,
                                    describe_error, encode_audio, make_audio_llm)
from fake_audio_llm import FakeAudioLLM, decode_audio, validate_body
from pipecat.processors.aggregators.llm_context import LLMContext

RATE = 16000


def tone(secs: float, amp: float = 0.3) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()


def seg(text: str | None, secs: float = 0.5) -> Segment:
    return Segment(pcm=tone(secs), rate=RATE, text=text)


def test_turn_audio_is_matched_by_its_transcript():
    heard = HeardSpeech()
    for s in (seg("Stale."), seg("What is"), seg(" the capital of France?"), seg("Next turn.")):
        heard.add(s)
    run = heard.take_for("What is  the capital of France?")
    assert [s.text for s in run] == ["What is", " the capital of France?"]
    assert [s.text for s in heard.take_all()] == ["Next turn."]  # older unmatched audio was dropped
    heard.add(seg("Kept."))
    assert heard.take_for("Typed, never spoken.") is None and len(heard) == 1


def test_heard_speech_is_bounded():
    heard = HeardSpeech(max_secs=2.0)
    for i in range(10):
        heard.add(seg(str(i), secs=0.5))
    assert [s.text for s in heard.take_all()] == ["6", "7", "8", "9"]


def cfg(**more):
    return load_settings(None, {"mode": "audio-llm", "audio_llm.model": "m",
                                "audio_llm.base_url": "http://127.0.0.1:9/v1",
                                **more}).audio_llm


def service(config, heard=None, transcribed=True):
    return AudioLLMService(cfg=config, heard=HeardSpeech() if heard is None else heard, context=LLMContext(),
                           transcribed=transcribed,
                           api_key="x", base_url=config.base_url,
                           settings=AudioLLMService.Settings(model=config.model))


def test_history_keeps_recent_turns_as_audio_and_older_ones_as_transcripts():
    heard = HeardSpeech()
    llm = service(cfg(**{"audio_llm.history_audio_turns": 1}), heard)
    context = LLMContext()

    async def turn(text, answer):
        heard.add(seg(text))
        context.add_message({"role": "user", "content": text})
        await llm.hear(context)
        context.add_message({"role": "assistant", "content": answer})

    async def go():
        await turn("One.", "A.")
        await turn("Two.", "B.")
        await turn("Three.", "C.")
        context.add_message({"role": "user", "content": "typed text"})  # not speech: sent as it is
        await llm.hear(context)

    asyncio.run(go())
    shown = [(m["role"], "audio" if audio_data(m) else m["content"]) for m in context.get_messages()]
    assert shown == [("user", "One."), ("assistant", "A."), ("user", "Two."), ("assistant", "B."),
                     ("user", "audio"), ("assistant", "C."), ("user", "typed text")]
    assert len(llm._transcripts) == 1  # transcripts are forgotten once used


def test_without_transcripts_old_turns_become_a_placeholder():
    heard = HeardSpeech()
    llm = service(cfg(), heard, transcribed=False)
    context = LLMContext()

    async def go():
        for answer in ("A.", "B."):
            heard.add(seg(None))
            context.add_message(await llm.audio_message(heard.take_all()))
            await llm.hear(context)
            context.add_message({"role": "assistant", "content": answer})
        await llm.hear(context)

    asyncio.run(go())
    assert [m["content"] for m in context.get_messages() if m["role"] == "user"] == [EARLIER_TURN, EARLIER_TURN]


def test_long_turns_are_cut_to_their_end():
    llm = service(cfg(**{"audio_llm.max_audio_secs": 1.0}))
    message = asyncio.run(llm.audio_message([seg("x", secs=3.0)]))
    audio, why = decode_audio(audio_data(message), "wav", {"wav"})
    assert why is None and abs(audio.secs - 1.0) < 0.01


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_encoded_audio_is_what_the_server_decodes(fmt):
    data = encode_audio(tone(1.0), RATE, fmt)
    audio, why = decode_audio(data, fmt, {"wav", "mp3"})
    assert why is None and audio.rate == RATE and abs(audio.secs - 1.0) < 0.1
    if fmt == "wav":
        info = sf.info(io.BytesIO(base64.b64decode(data)))
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)


def _error_from(server, model="fake/ultravox", timeout=5.0):
    """The exception the openai client really raises for what the fake server does."""
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=timeout)
    audio = encode_audio(tone(1.0), RATE, "wav")
    with pytest.raises(openai.APIError) as info:
        client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}])
    return info.value


def test_error_lines_say_what_to_do():
    with FakeAudioLLM(["unused"], fail_statuses=[503]) as server:
        c = cfg(**{"audio_llm.base_url": server.base_url, "audio_llm.model": "nope"})
        where = server.base_url
        assert describe_error(_error_from(server), c) == (
            f"audio LLM server {where} answered 503: simulated failure 503 (the server failed on this request: "
            "see its log)")
        assert describe_error(_error_from(server, model="nope"), c) == (
            f"audio LLM server {where} answered 404: The model `nope` does not exist. (check that "
            "audio_llm.model ('nope') is a model the server serves)")
    with FakeAudioLLM(["unused"], answer_delay=1.0) as server:
        line = describe_error(_error_from(server, timeout=0.2), cfg(**{"audio_llm.timeout_secs": 0.2}))
        assert "did not answer within 0.2 s" in line, line


def test_fake_server_rejects_malformed_requests():
    good = {"model": "m", "stream": True, "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}
    assert validate_body(good) == []
    bad_format = {**good, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "flac"}}]}]}
    assert any("format" in p for p in validate_body(bad_format))
    extra_key = {**good, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav", "rate": 16000}}]}]}
    assert any("unknown key 'rate'" in p for p in validate_body(extra_key))
    audio_in_assistant = {**good, "messages": [{"role": "assistant", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}
    assert validate_body(audio_in_assistant)
    assert validate_body({**good, "modalitiez": ["text"]})

    with FakeAudioLLM(["unused"]) as server:  # a text-only request: nothing for an audio model to hear
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=server.model, stream=True,
                                           messages=[{"role": "user", "content": "hi"}])
        silent = encode_audio(bytes(RATE * 2), RATE, "wav")
        with pytest.raises(openai.BadRequestError, match="above speech level"):
            client.chat.completions.create(model=server.model, stream=True, messages=[{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": silent, "format": "wav"}}]}])
        assert len(server.errors) == 2 and server.requests == []


def test_the_builder_checks_the_server_before_anything_loads():
    with pytest.raises(VoicebotError, match="unreachable"):
        make_audio_llm(cfg(), load_persona("default"), HeardSpeech(), LLMContext(), transcribed=True)


def test_requests_alternate_roles_without_touching_the_context():
    import copy

    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    messages = [{"role": "system", "content": "persona"}, {"role": "assistant", "content": "Hello, I'm Nova."},
                {"role": "user", "content": "One."}, {"role": "user", "content": [audio]},
                {"role": "assistant", "content": "A."}, {"role": "assistant", "content": "Refusal."},
                {"role": "user", "content": [audio]}]
    before = copy.deepcopy(messages)
    out = alternate(messages)
    assert messages == before
    assert out == [{"role": "system", "content": "persona"}, {"role": "user", "content": NO_USER_TURN},
                   {"role": "assistant", "content": "Hello, I'm Nova."},
                   {"role": "user", "content": [{"type": "text", "text": "One."}, audio]},
                   {"role": "assistant", "content": "A. Refusal."}, {"role": "user", "content": [audio]}]
    assert validate_body({"model": "m", "stream": True, "messages": out}) == []
    assert validate_body({"model": "m", "stream": True, "messages": messages})  # the strict server says no
