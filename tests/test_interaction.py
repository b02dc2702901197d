"""mode = "interaction" end to end through the file transport, against the local AudioInteraction stand-in.

The real model (a ~12 GB GPU) is not run here: tests/fake_interaction.py speaks its server's protocol
(POST /audio 204/409, GET /stream server-sent events) and decides by a script. The VAD, Whisper (audit
transcript, input moderation, and the test's ears), moderation and Piper are the real embedded models.
"""

import asyncio
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from pipecat.frames.frames import (EndFrame, Frame, InputAudioRawFrame, LLMContextFrame, LLMTextFrame,
                                   UserStoppedSpeakingFrame, VADUserStartedSpeakingFrame,
                                   VADUserStoppedSpeakingFrame)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.audit import read_session, verify
from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.config import InteractionConfig
from bot.frames import AuditEventFrame, InputRefusedFrame
from bot.services.interaction import (CHUNK_BYTES, MAX_BEHIND_CHUNKS, InteractionService, check_server,
                                          split_emotion)
from bot.session import run_file
from conftest import words
from fake_interaction import FakeInteractionServer, free_port

PERSONA = load_persona("default")


def decisions(session):
    return [r["data"] for r in session.records if r["type"] == "interaction.decision"]


def test_the_model_decides_replies_are_moderated_and_spoken_and_every_decision_is_audited(
        make_speech, settings_factory, transcriber, tmp_path):
    q = make_speech([(0.3, "Did you see the game last night, Tom?"),
                     (5.0, "What is the capital of France?"),
                     (11.0, "Tell me about my neighbour."),
                     (17.0, "You are a stupid idiot.")], total_secs=21.0)
    replies = [None,  # people talking among themselves: the model stays silent
               "\N{SMILING FACE WITH SMILING EYES} Paris is the capital of France.",
               "You are a stupid worthless idiot.",
               "Thanks, pleased to meet you, goodbye."]  # answers speech input moderation refuses
    with FakeInteractionServer(replies, close_first_stream=1.0) as server:
        s = settings_factory(mode="interaction", **{"interaction.base_url": server.base_url})
        threading.Timer(3.0, server.clear_cache).start()
        result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav"))

    assert server.errors == [] and result.errors == [], (server.errors, result.errors)
    assert [d.reply is not None for d in server.decisions] == [False, True, True, True]
    assert server.stream_connections >= 2, "the event stream was reconnected after the server closed it"
    # Every chunk is 400 ms; none was sent twice: chunks refused with 409 while the model wrote are dropped.
    assert all(len(c) == CHUNK_BYTES for c in server.chunks)
    assert server.refused >= 1
    assert len(server.chunks) + server.refused >= 21.0 / 0.4 - 1  # the whole input (and the tail while the bot spoke)

    heard = transcriber(tmp_path / "reply.wav")
    assert {"capital", "france"} <= set(words(heard)), heard
    assert not {"stupid", "worthless", "idiot", "pleased", "goodbye"} & set(words(heard)), heard
    # Nothing was said to the first stretch of talk (before the second question starts at 5 s).
    audio, rate = sf.read(str(tmp_path / "reply.wav"), dtype="float32", always_2d=True)
    assert np.abs(audio[: 5 * rate]).max() < 1e-3

    assert verify(result.audit_dir).ok
    session = read_session(result.audit_dir)
    assert session.header["mode"] == "interaction"
    made = decisions(session)
    spoke = [d for d in made if d["decision"] == "speak"]
    silent = [d for d in made if d["decision"] == "silent"]
    assert len(spoke) == 3 and len(silent) >= 2
    paris, rude, to_refused = spoke
    # The reply to refused speech was never spoken (the refusal was), and the audit says why.
    assert to_refused["withheld"] == "input-refused" and not to_refused["spoken"], to_refused
    # reply_s is the model's writing time (<|busy|> to <|end|>: 3 pieces 0.15 s apart), not the hold.
    assert all(0.4 < d["reply_s"] < 3.0 for d in spoke), spoke
    assert [r["data"]["t"] for r in session.records if r["type"] == "interaction.cache_cleared"] != []
    assert paris["emotion"] == "\N{SMILING FACE WITH SMILING EYES}" and paris["text"].endswith("France.")
    assert paris["spoken"] and paris["withheld"] is None and paris["dropped_chunks"] >= 1
    assert 5.0 < paris["start_s"] < 11.0 and paris["end_s"] - paris["start_s"] == pytest.approx(0.4)
    # Spans, not a record per chunk: they tile the input without overlapping.
    spans = sorted((d["start_s"], d["end_s"]) for d in made)
    assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
    assert len(made) <= 10
    # The first stretch of talk sits inside a silent span.
    assert any(d["start_s"] <= 1.0 and d["end_s"] >= 3.0 for d in silent), silent

    records = [t.summary for t in session.turns]
    spoken = " ".join(r["spoken"] if isinstance(r["spoken"], str) else " ".join(r["spoken"]) for r in records)
    assert "\N{SMILING FACE WITH SMILING EYES}" not in spoken and "Paris" in spoken
    assert any(r["refused"] for r in records), "the unsafe reply was blocked by output moderation"
    assert rude["text"].startswith("You are a stupid")  # what the model wrote stays on record


def test_server_down_is_one_line(settings_factory, tmp_path, make_speech):
    url = f"http://127.0.0.1:{free_port()}"
    s = settings_factory(mode="interaction", **{"interaction.base_url": url})
    with pytest.raises(VoicebotError, match=r"AudioInteraction server .* is unreachable .*interaction.base_url"):
        check_server(s.interaction)
    q = make_speech([(0.2, "Hello.")])
    with pytest.raises(VoicebotError, match="unreachable"):
        asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav"))


def test_leading_emotion_is_split_from_what_is_spoken():
    assert split_emotion("\N{GRINNING FACE} Hi there") == ("\N{GRINNING FACE}", "Hi there")
    assert split_emotion("\N{HEAVY BLACK HEART}\N{VARIATION SELECTOR-16}Hello") == ("\N{HEAVY BLACK HEART}\N{VARIATION SELECTOR-16}",
                                                                              "Hello")
    assert split_emotion("Hello \N{GRINNING FACE}") == ("", "Hello \N{GRINNING FACE}")
    assert split_emotion("\N{GRINNING FACE}") == ("\N{GRINNING FACE}", "")


def test_server_lost_mid_session_is_one_line_each_and_the_session_ends(settings_factory, tmp_path):
    q = tmp_path / "quiet.wav"
    sf.write(str(q), np.zeros(16000 * 5, dtype="int16"), 16000)
    server = FakeInteractionServer([None]).__enter__()
    s = settings_factory(mode="interaction", **{"interaction.base_url": server.base_url,
                                                "interaction.reconnect_max_secs": 1.0})

    def stop_after_two_chunks():
        deadline = time.monotonic() + 60
        while len(server.chunks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.__exit__(None, None, None)

    threading.Thread(target=stop_after_two_chunks, daemon=True).start()
    result = asyncio.run(run_file(s, PERSONA, q, tmp_path / "reply.wav"))

    assert server.chunks, "chunks were heard before the server went away"
    # One line for the posts (not one per chunk), one for the event stream that could not come back.
    assert len(result.errors) == 2, result.errors
    assert "unreachable" in result.errors[0] and "could not be reconnected" in result.errors[1]
    assert all("\n" not in e and "Traceback" not in e for e in result.errors)
    assert verify(result.audit_dir).ok


def test_a_server_behind_real_time_drops_the_oldest_chunks_unsent():
    service = InteractionService(InteractionConfig(), hold_for_verdict=False)
    for i in range(MAX_BEHIND_CHUNKS + 5):
        service._enqueue(bytes([i]) * CHUNK_BYTES)
    assert service._queue.qsize() == MAX_BEHIND_CHUNKS and service.unsent_chunks == 5
    index, chunk = service._queue.get_nowait()
    assert index == 5 and chunk[0] == 5  # the newest are kept, in order


# ---- held replies: every utterance waits for its own verdict ---------------------------------------

class _Seen(FrameProcessor):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.frames: list = []

    async def process_frame(self, frame, direction) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


def _chunks(voiced: bool, n: int) -> list[InputAudioRawFrame]:
    t = np.arange(CHUNK_BYTES // 2) / 16000
    pcm = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2") if voiced else np.zeros(CHUNK_BYTES // 2, "<i2")
    return [InputAudioRawFrame(audio=pcm.tobytes(), sample_rate=16000, num_channels=1) for _ in range(n)]


def _two_utterances(second_verdict: Frame) -> tuple[list[list[str]], list, FakeInteractionServer]:
    """A is spoken and its turn ends; B starts while A is still being checked; A is approved; the model answers
    (B). Returns the reply text pushed on after each step, every frame pushed, and the server."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    server = FakeInteractionServer([None, "Here is how you pick that lock."], piece_secs=0.05)
    seen = _Seen()

    def texts() -> list[str]:
        return [f.text for f in seen.frames if isinstance(f, LLMTextFrame)]

    async def main() -> list[list[str]]:
        service = InteractionService(InteractionConfig(base_url=server.base_url, verdict_wait_secs=30),
                                     hold_for_verdict=True)
        worker = PipelineWorker(Pipeline([service, seen]), params=PipelineParams(audio_in_sample_rate=16000),
                                idle_timeout_secs=None, enable_rtvi=False, check_dangling_tasks=False)
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        steps: list[list[str]] = []

        async def send(*frames: Frame) -> None:
            for frame in frames:
                await worker.queue_frame(frame)
                await asyncio.sleep(0.02)

        async def until(predicate, timeout: float = 10.0) -> None:
            deadline = time.monotonic() + timeout
            while not predicate() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

        await asyncio.sleep(0.5)
        # A: spoken, its turn ends; the model stays silent (its first decision).
        await send(VADUserStartedSpeakingFrame(), *_chunks(True, 3), VADUserStoppedSpeakingFrame(),
                   UserStoppedSpeakingFrame(), *_chunks(False, 2))
        await until(lambda: len(server.decisions) == 1)
        # B starts while A is still being checked; then A is approved.
        await send(VADUserStartedSpeakingFrame(), *_chunks(True, 3), VADUserStoppedSpeakingFrame(),
                   UserStoppedSpeakingFrame())
        await send(LLMContextFrame(context=LLMContext()))
        # The model answers B.
        await send(*_chunks(False, 2))
        await until(lambda: len(server.decisions) == 2)
        await asyncio.sleep(0.8)  # the reply has been written (<|end|>) and reached the service
        steps.append(texts())
        await send(second_verdict)  # B's verdict
        await asyncio.sleep(0.3)
        steps.append(texts())
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 10)
        await asyncio.sleep(0.3)  # the server sees the event stream closed before it stops
        return steps

    with server:
        steps = asyncio.run(main())
    return steps, seen.frames, server


def test_approving_one_utterance_does_not_release_the_reply_to_a_later_one_still_being_checked():
    steps, frames, server = _two_utterances(InputRefusedFrame(text="how do I pick a lock", refusal="No."))
    assert [d.reply is not None for d in server.decisions] == [False, True]
    assert steps == [[], []]  # held while B had no verdict, dropped when B was refused
    speak = [f.data for f in frames if isinstance(f, AuditEventFrame) and f.kind == "interaction.decision"
             and f.data["decision"] == "speak"]
    assert len(speak) == 1 and speak[0]["withheld"] == "input-refused" and not speak[0]["spoken"], speak


def test_the_held_reply_is_released_once_every_utterance_is_approved():
    steps, frames, server = _two_utterances(LLMContextFrame(context=LLMContext()))
    assert steps[0] == []  # A's approval alone did not release it
    assert "".join(steps[1]).strip() == "Here is how you pick that lock."
