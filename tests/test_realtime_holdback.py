"""Realtime mode without a server: the hold-back rules (pure logic), the session configuration it sends
(validated against the openai package's models) and its configuration errors."""

import pytest

from bot.realtime.holdback import ALL_TEXT, HoldBack
from bot.text_split import TextSplitter

A = b"\x01\x00" * 2400  # 100 ms of pcm16 at 24 kHz


def test_chunker_cuts_sentences_as_soon_as_the_delta_ending_one_arrives():
    c = TextSplitter("sentence")
    assert c.feed("Paris is") == []
    assert c.feed(" the capital.") == ["Paris is the capital."]  # terminal punctuation at the end of a delta
    assert c.feed(" It is 3") == [] and c.feed(".5 km wide!\" Yes") == ["It is 3.5 km wide!\""]
    assert c.pending == " Yes"
    assert c.feed("...") == []  # an ellipsis waits: "Yes... and" would go on
    assert c.feed(" And") == ["Yes..."]
    assert c.feed(" so") == [] and c.flush() == "And so" and c.flush() is None


def test_chunker_clauses_and_word_cap():
    assert TextSplitter("clause").feed("Well, I think so; yes.") == ["Well,", "I think so;", "yes."]
    capped = TextSplitter("sentence", max_words=3)
    assert capped.feed("one two three four") == ["one two three"]
    assert capped.flush() == "four"
    with pytest.raises(ValueError):
        TextSplitter("word")


def test_audio_is_released_up_to_the_last_delta_of_the_sentence_that_passed():
    hb = HoldBack("strict", max_lag=1.0)
    assert hb.add_text("Paris", 0.00) == []
    assert hb.add_audio(A, 0.01) == []          # covered by the next delta
    first = hb.add_text(" is the capital.", 0.02)  # completes sentence 0 (delta 2)
    assert [c.text for c in first] == ["Paris is the capital."] and first[0].last_delta == 2
    assert hb.add_audio(A, 0.03) == []          # arrived after sentence 0 ended: waits for sentence 1
    second = hb.add_text(" It", 0.04)
    assert second == []
    released = hb.passed(first[0], 0.10)
    assert [p.offset for p in released] == [0]  # only the audio received before " is the capital." arrived
    assert hb.held_bytes == len(A)
    assert hb.add_text(" is big.", 0.11)[0].text == "It is big."
    assert hb.finish_text(0.2) == []            # nothing left; sentence 1 not checked yet
    assert hb.release(0.2) == []
    last = hb.add_audio(A, 0.21)
    assert last == []
    assert [p.offset for p in hb.passed(hb_chunk(hb, 1, "It is big."), 0.3)] == [len(A), 2 * len(A)]
    assert hb.all_clear and hb.add_audio(A, 0.31)  # after the whole transcript passed, audio flows
    stats = hb.stats.timings_ms()
    assert stats["holdback_ms"] == pytest.approx(90.0) and stats["holdback_max_ms"] == pytest.approx(270.0)


def hb_chunk(hb, index, text):
    from bot.realtime.holdback import Chunk

    return Chunk(index=index, text=text, last_delta=hb.deltas, t_ready=0.0)


def test_a_failing_chunk_drops_everything_held_and_nothing_after_is_released():
    hb = HoldBack("strict", max_lag=1.0)
    hb.add_text("Fine", 0.0)
    hb.add_audio(A, 0.01)                 # before the delta that ends "Fine.": covered by it
    ok = hb.add_text(".", 0.015)[0]
    hb.add_audio(A, 0.02)                 # after it: waits for the next sentence (conservative)
    bad = hb.add_text(" You idiot.", 0.03)[0]
    hb.add_audio(A, 0.04)
    released = hb.passed(ok, 0.05)
    assert [p.offset for p in released] == [0]
    assert hb.drop() == 2 * len(A)        # the bad sentence fails: what is held never plays
    assert hb.closed and hb.add_audio(A, 0.06) == [] and hb.passed(bad, 0.07) == []
    assert hb.stats.dropped_bytes == 3 * len(A)


def test_final_chunk_covers_all_audio_and_a_response_without_transcript_is_never_released():
    hb = HoldBack("strict", max_lag=5.0)
    hb.add_text("no punctuation at all", 0.0)
    hb.add_audio(A, 0.1)
    [final] = hb.finish_text(0.2)
    assert final.last_delta == ALL_TEXT and final.text == "no punctuation at all"
    assert len(hb.passed(final, 0.3)) == 1

    silent = HoldBack("strict", max_lag=5.0)
    silent.add_audio(A, 0.0)
    assert silent.finish_text(0.1) == [] and silent.release(0.2) == [] and silent.held_bytes == len(A)


def test_lag_strict_flags_audio_no_transcript_followed_and_monitor_plays_it():
    hb = HoldBack("strict", max_lag=0.5)
    hb.add_audio(A, 0.0)
    assert hb.lagging(0.4) is None
    assert hb.lagging(0.6) == pytest.approx(0.6)
    hb.add_text("Late", 0.61)  # a delta after the audio: it is covered now, just not checked yet
    assert hb.lagging(5.0) is None
    hb.add_audio(A, 5.0)
    assert hb.lagging(5.4) is None and hb.lagging(5.6) is not None
    hb.finish_text(5.7)
    assert hb.lagging(9.0) is None  # the transcript is complete: nothing lags any more

    mon = HoldBack("monitor", max_lag=0.5)
    assert len(mon.add_audio(A, 0.0)) == 1 and mon.lagging(9.0) is None
    assert mon.stats.timings_ms()["holdback_ms"] == 0.0


def test_session_update_is_a_valid_ga_client_event_with_no_unknown_fields():
    from fake_realtime import validate_client_event

    from bot.config import RealtimeConfig
    from bot.persona import load_persona
    from bot.realtime.client import session_config

    persona = load_persona("default")
    session = session_config(RealtimeConfig(), persona)
    assert validate_client_event({"type": "session.update", "session": session}) == []
    audio = session["audio"]
    assert audio["input"]["format"] == audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["turn_detection"]["create_response"] is False
    assert audio["output"]["voice"] == persona.voices["openai"]
    assert session["instructions"] == persona.instructions
    semantic = session_config(RealtimeConfig(turn_detection="semantic_vad", eagerness="low"), persona)
    assert validate_client_event({"type": "session.update", "session": semantic}) == []
    # the validator does catch what the API would not know
    assert validate_client_event({"type": "response.create", "bogus": 1})
    assert validate_client_event({"type": "conversation.item.truncate", "item_id": "x"})


def test_endpoints_and_missing_key(monkeypatch, settings_factory):
    from bot.errors import VoicebotError
    from bot.realtime.client import endpoints
    from pipelines import build_pipeline, BuildContext
    from bot.persona import load_persona

    assert endpoints("http://127.0.0.1:9/v1/") == ("http://127.0.0.1:9/v1", None, "ws://127.0.0.1:9/v1/realtime")
    assert endpoints("wss://h/v1")[1:] == ("wss://h/v1", "wss://h/v1/realtime")
    assert endpoints(None)[2] == "wss://api.openai.com/v1/realtime"
    with pytest.raises(VoicebotError, match="is not a URL"):
        endpoints("localhost:8000")

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = settings_factory(mode="realtime")
    with pytest.raises(VoicebotError, match=r"mode is 'realtime' but \$OPENAI_API_KEY is not set"):
        build_pipeline(BuildContext(s, load_persona("default"), transport=None))


def test_playout_offsets_stay_bounded_over_a_long_session():
    from bot.realtime.playout import KEPT_KEYS, PlayoutLedger, RecentOffsets

    offsets = RecentOffsets()
    for i in range(10 * KEPT_KEYS):
        offsets.raise_to(f"item-{i}", 4800)
    offsets.raise_to("item-3", 1)  # long forgotten: starts again
    assert len(offsets) == KEPT_KEYS
    assert offsets.get(f"item-{10 * KEPT_KEYS - 1}") == 4800 and offsets.get("item-0") == 0
    ledger = PlayoutLedger()
    ledger.mark("a", 96)
    ledger.mark("a", 48)  # offsets only grow
    assert ledger.played_ms("a") == 2 and ledger.played_ms(None) == 0
