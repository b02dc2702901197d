"""Speech first on the CPU (bot/cpu.py): text generation waits while a voice is being synthesized."""

import threading
import time

from bot.cpu import SpeechFirst


def test_generation_waits_while_speech_is_synthesized_and_resumes_after():
    gate = SpeechFirst()
    resumed = threading.Event()

    def llm_token_loop():
        gate.wait_turn(timeout=5.0)
        resumed.set()

    with gate.speaking():
        worker = threading.Thread(target=llm_token_loop)
        worker.start()
        assert not resumed.wait(0.2)  # still synthesizing: the LLM thread is parked
    assert resumed.wait(2.0)  # synthesis over: it goes on at once
    worker.join()
    assert not gate.busy


def test_a_stuck_synthesis_never_starves_generation_for_longer_than_the_bound():
    gate = SpeechFirst()
    with gate.speaking():
        started = time.monotonic()
        gate.wait_turn(timeout=0.1)
        assert time.monotonic() - started < 1.0
