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
from bot.realtime.holdback import HoldBack
from bot.text_split import TextSplitter
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

    _, released = feed(HoldBack("strict", chunker=TextSplitter()))
    assert sum(len(p.pcm) for p in released) == 400  # ordered rule: sentence 2's audio released unchecked
    _, released = feed(HoldBack("strict", chunker=TextSplitter(), ordered=False))
    assert released == []
    hb = HoldBack("strict", chunker=TextSplitter(), ordered=False)
    second, _ = feed(hb)
    assert hb.finish_text(0.5) == [] and hb.release(0.5) == []  # the transcript is complete, not all passed
    assert sum(len(p.pcm) for p in hb.passed(second, 0.6)) == 400  # all of it once everything passed


def test_missing_key_fails_in_one_line(settings_factory, monkeypatch):
    from bot.realtime.gemini import GeminiConnector

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    s = settings_factory(mode="realtime", **{"realtime.provider": "gemini"})
    with pytest.raises(VoicebotError, match=r"\$GEMINI_API_KEY is not set"):
        GeminiConnector(s.realtime, PERSONA)


class _Session:
    """The two halves of google-genai's AsyncSession that GeminiLink uses: receive() (one model turn per call)
    and the send methods, fed with Live API messages parsed by the SDK's own LiveServerMessage."""

    def __init__(self, turns: list[list[dict]]) -> None:
        from google.genai import types

        self._turns = [[m if m == "pause" else types.LiveServerMessage.model_validate_json(
            __import__("json").dumps(m)) for m in turn] for turn in turns]
        self.told: list = []
        self.go = asyncio.Event()

    async def receive(self):
        if not self._turns:
            await asyncio.sleep(3600)
        for message in self._turns.pop(0):
            if message == "pause":  # wait for the test to act
                await self.go.wait()
                continue
            yield message
            await asyncio.sleep(0)

    async def send_client_content(self, *, turns, turn_complete):
        self.told.append((turns, turn_complete))


def _audio(n: int) -> dict:
    import base64

    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                                                         "data": base64.b64encode(bytes(n)).decode()}}]}}}


def _events(link, n: int) -> list:
    async def take():
        return [await asyncio.wait_for(link.recv(), 2) for _ in range(n)]

    return take()


def test_link_holds_the_model_turn_until_asked_and_maps_interruption():
    """GeminiLink on its own: the answer waits for response.create; a barge-in (interrupted) becomes speech_started
    and drops the held answer; a refused turn's answer never comes out; the refusal goes into the model's context
    without asking it to answer."""
    from bot.realtime.gemini import GeminiLink

    async def scenario():
        session = _Session([
            [{"serverContent": {"inputTranscription": {"text": "Hi"}}},
             _audio(960), {"serverContent": {"inputTranscription": {"text": " there"}}},  # late: not carried over
             {"serverContent": {"outputTranscription": {"text": "Hello."}}},
             {"serverContent": {"interrupted": True}}, _audio(960), {"serverContent": {"turnComplete": True}}],
            [{"serverContent": {"inputTranscription": {"text": "Say something bad"}}}, _audio(480),
             {"serverContent": {"turnComplete": True}}],
        ])
        manager = type("M", (), {"__aexit__": lambda *a: asyncio.sleep(0)})()
        link = GeminiLink(manager, session, "wss://test")
        first = await _events(link, 2)
        assert [e.type for e in first] == ["input_audio_buffer.committed",
                                           "conversation.item.input_audio_transcription.completed"]
        assert first[1].transcript == "Hi"
        await asyncio.sleep(0.05)
        # the barge-in, then the second user turn; nothing of the first answer (held, then interrupted)
        events = [await link.recv() for _ in range(3)]
        assert [e.type for e in events] == ["input_audio_buffer.speech_started", "input_audio_buffer.committed",
                                            "conversation.item.input_audio_transcription.completed"]
        assert events[2].transcript == "Say something bad"
        events = events[1:]
        await link.send({"type": "conversation.item.delete", "item_id": events[0].item_id})  # refused
        await link.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": REFUSAL}]}})
        await asyncio.sleep(0.05)
        assert link._events.empty(), "a refused turn's answer is never given out"
        (turns, complete), = session.told
        assert (turns.role, turns.parts[0].text, complete) == ("model", REFUSAL, False)
        await link.close()

    asyncio.run(scenario())


def test_link_releases_a_complete_answer_in_order():
    from bot.realtime.gemini import GeminiLink

    async def scenario():
        session = _Session([[{"serverContent": {"inputTranscription": {"text": "Hi"}}}, _audio(960),
                             {"serverContent": {"outputTranscription": {"text": "Hello."}}}, _audio(480),
                             {"serverContent": {"generationComplete": True}}, {"serverContent": {"turnComplete": True}}]])
        manager = type("M", (), {"__aexit__": lambda *a: asyncio.sleep(0)})()
        link = GeminiLink(manager, session, "wss://test")
        await _events(link, 2)
        await asyncio.sleep(0.05)
        await link.send({"type": "response.create"})
        got = await _events(link, 7)
        assert [e.type for e in got] == [
            "response.created", "response.output_item.added", "response.output_audio.delta",
            "response.output_audio_transcript.delta", "response.output_audio.delta",
            "response.output_audio_transcript.done", "response.done"]
        assert got[-1].response.status == "completed" and got[-2].transcript == "Hello."
        assert len({e.response_id for e in got[2:6]} | {got[0].response.id}) == 1
        await link.close()

    asyncio.run(scenario())


def test_link_cancel_drops_the_rest_and_ends_the_response_as_cancelled():
    from bot.realtime.gemini import GeminiLink

    async def scenario():
        session = _Session([[{"serverContent": {"inputTranscription": {"text": "Hi"}}}, _audio(960), "pause",
                             _audio(960), {"serverContent": {"outputTranscription": {"text": "Bad."}}},
                             {"serverContent": {"turnComplete": True}}]])
        manager = type("M", (), {"__aexit__": lambda *a: asyncio.sleep(0)})()
        link = GeminiLink(manager, session, "wss://test")
        await _events(link, 2)
        await link.send({"type": "response.create"})
        got = await _events(link, 3)
        assert [e.type for e in got] == ["response.created", "response.output_item.added",
                                         "response.output_audio.delta"]
        await link.send({"type": "response.cancel"})  # output blocked (or lag, barge-in) on the service's side
        session.go.set()
        (done,) = await _events(link, 1)  # the rest of the model's turn is dropped, then the response ends
        assert done.type == "response.done" and done.response.status == "cancelled"
        await link.close()

    asyncio.run(scenario())
