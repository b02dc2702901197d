"""The speculative end of turn (bot/turn_speculation.py), driven with the frames pipecat gives it.

These run the real strategy on pipecat's task manager and record the events it raises to the user
aggregator; the file-transport tests further down run it in the whole cascade.
"""

import asyncio
import time

import numpy as np

from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.frames.frames import (BotStartedSpeakingFrame, TranscriptionFrame, VADUserStartedSpeakingFrame,
                                   VADUserStoppedSpeakingFrame)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from bot.frames import NoWordsFrame, SpeakerFrame
from bot.persona import load_persona
from bot.session import run_file
from bot.turn_speculation import SpeculativeSilenceStop
from conftest import words

WAIT = 0.15


def drive(steps, *, needs_approval=False, approve=None, voice_onset=None, **kwargs):
    """Run ``steps`` (frames, ("sleep", secs), "turn start", or callables given the events so far) through a
    strategy; return the events it raised. Each event tuple ends with when it happened (seconds since the
    start) only for "turn end" when ``kwargs`` ask for it (``timed=True``)."""
    timed = kwargs.pop("timed", False)

    async def go():
        strategy = SpeculativeSilenceStop(user_speech_timeout=WAIT, needs_approval=needs_approval,
                                          voice_onset=voice_onset, **kwargs)
        await strategy.setup(FrameProcessorSetup(clock=None, pipeline_worker=None,
                                                 task_manager=TaskManager(loop=asyncio.get_running_loop())))
        events = []
        t0 = time.monotonic()

        @strategy.event_handler("on_broadcast_frame")
        async def _broadcast(_, frame_cls, **data):
            events.append(("broadcast", frame_cls.__name__, data.get("text")))

        @strategy.event_handler("on_user_turn_inference_triggered")
        async def _inference(_, speculation):
            events.append(("infer", speculation.text if speculation else None))
            if speculation and approve is not None and approve(speculation.text):
                strategy.approve(speculation.text)

        @strategy.event_handler("on_user_turn_speculation_cancelled")
        async def _cancelled(_):
            events.append(("withdrawn",))

        @strategy.event_handler("on_user_turn_stopped")
        async def _stopped(_, params):
            events.append(("turn end", params.confirms_speculation)
                          + ((round(time.monotonic() - t0, 2),) if timed else ()))
            await strategy.handle_user_turn_stopped()

        await strategy.handle_user_turn_started()
        for step in steps:
            if step == "turn start":
                await strategy.handle_user_turn_started()
            elif callable(step):
                step(list(events))
            elif isinstance(step, tuple):
                await asyncio.sleep(step[1])
            else:
                await strategy.process_frame(step)
        await asyncio.sleep(WAIT * 2)
        await strategy.cleanup()
        return events

    return asyncio.run(go())


def said(text):
    return TranscriptionFrame(text, "user", "", finalized=True)


SPOKE = VADUserStartedSpeakingFrame()
PAUSED = VADUserStoppedSpeakingFrame(stop_secs=0.2)


def test_the_answer_starts_on_the_transcript_and_the_turn_end_keeps_it():
    events = drive([SPOKE, PAUSED, said("What is the capital of France?")])
    assert events == [("infer", "What is the capital of France?"), ("turn end", True)]


def test_the_user_going_on_withdraws_it_and_the_whole_turn_is_answered():
    events = drive([SPOKE, PAUSED, said("Hello there."), ("sleep", WAIT / 3), SPOKE, PAUSED, said("Who are you?")])
    assert events == [("infer", "Hello there."), ("withdrawn",), ("infer", "Hello there. Who are you?"),
                      ("turn end", True)]


def test_a_transcript_after_the_wait_is_answered_the_ordinary_way():
    events = drive([SPOKE, PAUSED, ("sleep", WAIT * 2), said("Late words.")])
    assert events == [("infer", None), ("turn end", False)]


def test_with_input_moderation_only_an_approved_text_is_kept():
    events = drive([SPOKE, PAUSED, said("You are an idiot.")], needs_approval=True, approve=lambda text: False)
    assert events == [("infer", "You are an idiot."), ("withdrawn",), ("infer", None), ("turn end", False)]
    events = drive([SPOKE, PAUSED, said("Hello.")], needs_approval=True, approve=lambda text: True)
    assert events == [("infer", "Hello."), ("turn end", True)]


def test_no_turn_end_while_the_vad_is_confirming_resumed_speech():
    # The user resumed after a short pause, but the VAD has not heard start_secs of it yet (onset):
    # the turn stays open. Here the onset turns out to be a noise, so the turn ends after one more wait.
    onset = {"heard": True}
    seen = {}

    def noise_over(events):
        seen["before"] = events
        onset["heard"] = False

    events = drive([SPOKE, PAUSED, said("Hello there."), ("sleep", WAIT * 2.5), noise_over],
                   voice_onset=lambda: onset["heard"])
    assert seen["before"] == [("infer", "Hello there.")]  # not ended during the onset
    assert events == [("infer", "Hello there."), ("turn end", True)]


HOLD = 0.3


def test_an_unfinished_clause_waits_longer_and_its_answer_is_prepared_meanwhile():
    events = drive([SPOKE, PAUSED, said("I was wondering if,"), ("sleep", HOLD)], unfinished_wait_secs=HOLD,
                   timed=True)
    assert events[0] == ("infer", "I was wondering if,")
    assert events[1][:2] == ("turn end", True)
    assert events[1][2] >= WAIT + HOLD - 0.02, events  # the ordinary wait, then the extra one


def test_a_finished_question_still_ends_at_the_ordinary_speed():
    events = drive([SPOKE, PAUSED, said("What is the capital of France?")], unfinished_wait_secs=HOLD, timed=True)
    assert events[1][:2] == ("turn end", True)
    assert events[1][2] < WAIT + HOLD - 0.05, events


def test_going_on_during_the_extra_wait_makes_one_turn_of_the_whole_question():
    events = drive([SPOKE, PAUSED, said("I was wondering if,"), ("sleep", WAIT + HOLD / 2),
                    SPOKE, PAUSED, said("what is the capital of France?")], unfinished_wait_secs=HOLD)
    assert events == [("infer", "I was wondering if,"), ("withdrawn",),
                      ("infer", "I was wondering if, what is the capital of France?"), ("turn end", True)]


def test_the_extra_wait_is_bounded_to_one_per_pause():
    events = drive([SPOKE, PAUSED, said("and"), ("sleep", WAIT + HOLD + 0.1)], unfinished_wait_secs=HOLD)
    assert events == [("infer", "and"), ("turn end", True)]


def test_speech_soon_after_the_turn_ended_continues_that_turn_and_its_answer_leaves_the_context():
    context = LLMContext(messages=[{"role": "user", "content": "And so my fellow Americans."},
                                   {"role": "assistant", "content": "Hello there"}])
    events = drive([SPOKE, PAUSED, said("And so my fellow Americans."), ("sleep", WAIT * 1.5),
                    "turn start", SPOKE, PAUSED, said("ask not what your country can do for you.")],
                   resume_secs=1.0, context=context)
    assert events[:2] == [("infer", "And so my fellow Americans."), ("turn end", True)]
    assert events[2] == ("broadcast", "TurnResumedFrame", "And so my fellow Americans.")
    assert events[3:] == [("infer", "ask not what your country can do for you."), ("turn end", True)]
    # the withdrawn answer is gone before the continuation is answered; the user's words stay
    assert [m["role"] for m in context.get_messages()] == ["user"]


def test_another_speaker_does_not_continue_a_turn():
    context = LLMContext(messages=[{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}])
    events = drive([SpeakerFrame(speaker="ann"), SPOKE, PAUSED, said("Hi."), ("sleep", WAIT * 1.5),
                    SpeakerFrame(speaker="bob"), "turn start", SPOKE, PAUSED, said("Who are you?")],
                   resume_secs=1.0, context=context)
    assert not [e for e in events if e[0] == "broadcast"], events
    assert len(context.get_messages()) == 2


def test_speech_long_after_the_turn_ended_is_a_new_turn():
    context = LLMContext(messages=[{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}])
    events = drive([SPOKE, PAUSED, said("Hi."), ("sleep", WAIT + 0.3), "turn start", SPOKE, PAUSED,
                    said("Who are you?")], resume_secs=0.2, context=context)
    assert not [e for e in events if e[0] == "broadcast"], events
    assert len(context.get_messages()) == 2


class Verdict:
    """A turn analyzer with a fixed verdict, in place of Smart-Turn v3 (which benchmarks/endpointing.py
    measures on real audio): the strategy only reads its verdict."""

    def __init__(self, state):
        self.state, self.asked = state, 0

    def append_audio(self, *_):
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self):
        self.asked += 1
        return self.state, None

    def update_vad_start_secs(self, _):
        pass

    def set_sample_rate(self, _):
        pass

    def clear(self):
        pass

    async def cleanup(self):
        pass


def test_a_finished_text_in_an_unfinished_voice_waits_longer_with_the_acoustic_check():
    voice = Verdict(EndOfTurnState.INCOMPLETE)
    events = drive([SPOKE, PAUSED, said("Tell me if you can."), ("sleep", HOLD)], unfinished_wait_secs=HOLD,
                   acoustic=voice, timed=True)
    assert voice.asked == 1 and events[1][:2] == ("turn end", True)
    assert events[1][2] >= WAIT + HOLD - 0.02, events
    voice = Verdict(EndOfTurnState.COMPLETE)
    events = drive([SPOKE, PAUSED, said("Tell me if you can.")], unfinished_wait_secs=HOLD, acoustic=voice, timed=True)
    assert voice.asked == 1 and events[1][2] < WAIT + HOLD - 0.05, events


def test_a_sound_with_no_words_that_cut_the_bot_off_is_a_false_interruption():
    # The bot is speaking; a sound starts a user turn (the barge-in cuts the bot); the STT finds no words.
    events = drive([BotStartedSpeakingFrame(), "turn start", SPOKE, PAUSED, NoWordsFrame()],
                   resume_after_noise=True)
    assert events == [("broadcast", "FalseInterruptionFrame", None), ("infer", None), ("turn end", False)]


def test_words_after_the_barge_in_are_a_real_interruption():
    # however late the transcript comes: no timer decides it was a noise
    events = drive([BotStartedSpeakingFrame(), "turn start", SPOKE, PAUSED, ("sleep", WAIT * 2),
                    said("Stop, please.")], resume_after_noise=True)
    assert not [e for e in events if e[0] == "broadcast"], events
    assert events[-1] == ("turn end", False)  # answered the ordinary way: the transcript came after the wait


def test_a_sound_while_the_bot_is_quiet_is_not_an_interruption():
    events = drive(["turn start", SPOKE, PAUSED, NoWordsFrame()], resume_after_noise=True)
    assert events == []


def test_in_the_cascade_a_pause_mid_question_gives_one_answer_to_the_whole_question(
        make_speech, piper, settings_factory, transcriber, tmp_path, monkeypatch):
    # The pause (0.55 s) is longer than the VAD stop (0.2 s) plus the time to transcribe "Hello there.",
    # so an answer to it is started, but the user goes on before the end-of-turn wait (0.2 + 0.8 s here,
    # to leave room for a slow CPU) is over: that answer must be withdrawn unheard.
    withdrawn = []
    real = SpeculativeSilenceStop.trigger_user_turn_speculation_cancelled

    async def counted(self):
        withdrawn.append(self._speculation.text if self._speculation else None)
        await real(self)

    monkeypatch.setattr(SpeculativeSilenceStop, "trigger_user_turn_speculation_cancelled", counted)
    audio, rate = piper("Hello there.")
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    resume = 0.4 + (voiced[-1] + 1) / rate + 0.55
    q = make_speech([(0.4, "Hello there."), (resume, "What is the capital of France?")], total_secs=8.0)
    s = settings_factory(**{"llm.provider": "scripted", "vad.turn_timeout_secs": 0.8,
                            "llm.script": ["Paris is the capital of France.", "This is a second reply."]})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    users = [m["content"] for m in result.context_messages if m["role"] == "user"]
    assistants = [m["content"] for m in result.context_messages if m["role"] == "assistant"]
    said = " ".join(users)  # pipecat writes each transcribed segment of the turn as its own message
    assert "Hello" in said and "France" in said, users
    assert withdrawn, "no answer was started during the pause: the test did not exercise a withdrawal"
    assert assistants == ["Paris is the capital of France."], assistants  # one answer, to the whole turn
    heard = set(words(transcriber(tmp_path / "reply.wav")))
    assert {"capital", "france"} <= heard and "second" not in heard, heard


def test_in_the_cascade_a_short_pause_is_not_the_end_of_the_turn(make_speech, piper, settings_factory, tmp_path):
    # A 0.3 s pause: after the VAD stop (0.2 s) and while the VAD confirms the resumed speech (it needs
    # 0.2 s of it), the 0.3 s end-of-turn wait runs out. The turn must stay open: one turn, one answer.
    audio, rate = piper("Hello there,")
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    resume = 0.4 + (voiced[-1] + 1) / rate + 0.3
    q = make_speech([(0.4, "Hello there,"), (resume, "who are you?")], total_secs=7.0)
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": ["I am Nova.", "This is a second reply."]})
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    assert len(result.turns) == 1, [t.transcript for t in result.turns]
    # the resumed words are in the one turn ("who are you?"; tiny.en once heard "hey, where are you?")
    assert "you" in result.turns[0].transcript.lower() and result.turns[0].spoken_text == "I am Nova."
