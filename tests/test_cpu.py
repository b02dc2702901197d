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


# --- the CPU plan and the fair scheduler -------------------------------------------------------------

import asyncio  # noqa: E402

import pytest  # noqa: E402

from bot.cpu import CpuScheduler, ModelPool, Work, session_scope, thread_plan  # noqa: E402


@pytest.mark.parametrize("cores,sessions,llm,threads,slots", [
    (2, 1, 1, 2, 1), (2, 2, 1, 1, 2), (2, 4, 1, 1, 2), (8, 1, 4, 8, 1), (8, 2, 2, 4, 2), (8, 3, 1, 2, 3),
    (1, 4, 1, 1, 1)])
def test_thread_plan_fills_the_cores_without_oversubscribing(cores, sessions, llm, threads, slots):
    plan = thread_plan(sessions, cores=cores)
    assert (plan.llm, plan.stt, plan.onnx, plan.slots) == (llm, threads, threads, slots)
    assert plan.slots * plan.stt <= cores or plan.stt == 1


def test_explicit_thread_settings_win_over_the_plan():
    from bot.config import Settings

    settings = Settings.model_validate({"llm": {"n_threads": 3}, "stt": {"cpu_threads": 5}})
    plan = thread_plan(2, cores=8).for_settings(settings)
    assert (plan.llm, plan.stt, plan.onnx) == (3, 5, 4)
    assert thread_plan(2, cores=8).llm == 2  # without the settings: half of the 4-core share


def _job(scheduler, session, order, hold: threading.Event | None = None, started=None):
    with scheduler.job(Work.LLM, session=session):
        order.append(session)
        if started is not None:
            started.set()
        if hold is not None:
            hold.wait(5)


def test_scheduler_lets_in_at_most_its_slots_and_round_robins_between_sessions():
    sched = CpuScheduler(1)
    order: list[str] = []
    hold, started = threading.Event(), threading.Event()
    holder = threading.Thread(target=_job, args=(sched, "a", order, hold, started))
    holder.start()
    assert started.wait(2)
    # "a" holds the only slot; a burst of 3 more jobs from "a", then one each from "b" and "c", waits.
    waiters = []
    for session in ["a", "a", "a", "b", "c"]:
        t = threading.Thread(target=_job, args=(sched, session, order))
        waiters.append(t)
        t.start()
        deadline = time.monotonic() + 2
        while sched.waiting < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert sched.running == 1 and sched.waiting == 5
    hold.set()
    for t in [holder, *waiters]:
        t.join(5)
    # the sessions served longest ago go first: b and c are not stuck behind a's burst
    assert order == ["a", "b", "c", "a", "a", "a"], order
    assert sched.running == 0 and sched.granted == {"a": 4, "b": 1, "c": 1}


def test_stt_goes_before_llm_steps_and_a_cancelled_waiter_gives_its_place_back():
    sched = CpuScheduler(1)

    async def main():
        order = []
        async with sched.ajob(Work.OTHER, session="x"):
            llm = asyncio.create_task(_ajob(sched, Work.LLM, "y", order))
            stt = asyncio.create_task(_ajob(sched, Work.STT, "z", order))
            doomed = asyncio.create_task(_ajob(sched, Work.STT, "w", order))
            await asyncio.sleep(0.05)
            doomed.cancel()
            await asyncio.sleep(0.05)
            assert sched.waiting == 2
        await asyncio.gather(llm, stt)
        assert order == ["z", "y"]
        assert sched.running == 0 and sched.waiting == 0

    asyncio.run(main())


async def _ajob(sched, work, session, order):
    async with sched.ajob(work, session=session):
        order.append(session)
        await asyncio.sleep(0.01)


def test_session_scope_follows_tasks_and_threads_started_by_asyncio():
    sched = CpuScheduler(2)

    def transcribe():
        with sched.job(Work.STT):
            pass

    async def main():
        with session_scope("s1"):
            await asyncio.to_thread(transcribe)
            await asyncio.create_task(asyncio.to_thread(transcribe))
            return dict(sched.granted)

    assert asyncio.run(main()) == {"s1": 2}
    assert sched.granted == {} and sched._served == {}  # an ended session is forgotten: a server's state stays bounded


def test_model_pool_makes_instances_on_demand_up_to_its_size():
    made = []
    pool = ModelPool(lambda: made.append(object()) or made[-1], size=2)
    inside = threading.Barrier(3, timeout=5)

    def use():
        with pool.use():
            inside.wait()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    for t in threads:
        t.join()
    assert pool.made == 2
    with pool.use() as model:
        assert model in made  # reused, not made again
    assert pool.made == 2
