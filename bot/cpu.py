"""The CPU budget: how many threads each model runtime gets, who computes next, and speech first.

Everything that decides how voicebot uses the cores lives here, in three parts.

**1. Threads per runtime** (:func:`thread_plan`). llama.cpp (``llm.n_threads``), CTranslate2
(``stt.cpu_threads``) and onnxruntime (Piper; Silero VAD and Smart-Turn already use one thread) each
default to "all cores". With several sessions, or several runtimes busy at once, that oversubscribes the
CPU: on 2 cores, 2 processes made llama.cpp's first token go from ~0.1 s to 1.5 s (issue 11). The plan
gives CTranslate2 and onnxruntime ``cores // min(sessions, cores)`` threads (at least 1), so that
``sessions`` jobs at once fill the cores instead of fighting over them, and llama.cpp half of that (its
threads spin-wait for each other, so a descheduled one stalls the rest). An explicit config value (> 0)
always wins::

    plan = thread_plan(sessions=4)             # cores from the process's CPU affinity
    plan.llm, plan.stt, plan.onnx              # -> llama.cpp, CTranslate2, onnxruntime threads
    plan.for_settings(settings)                # same, with llm.n_threads / stt.cpu_threads honoured

``voicebot serve`` (many sessions in one process) calls :func:`set_sessions` with the number of sessions
it admits before building them; a single-session command leaves it at 1. Models are cached per thread
count (``bot/services``), so sessions built under the same plan share one loaded model.

**2. A fair scheduler for the shared models** (:class:`CpuScheduler`, one per process: :data:`SCHEDULER`).
A compute job (an STT decode; one step of an LLM generation: the prompt, then each token) asks for one
of ``slots`` places (:attr:`ThreadPlan.slots`: the sessions, at most the cores), tagged with its session.
Waiting jobs are let in by kind (:class:`Work`: STT before LLM), then **round robin between sessions**
(the session let in longest ago goes next), then in order of arrival. One busy session cannot starve the
others, and no more jobs run than the plan has threads for, whatever the number of sessions::

    with SCHEDULER.job(Work.STT):              # blocking code (worker threads)
        text = model.transcribe(...)
    async with SCHEDULER.ajob(Work.OTHER):     # coroutines: waits without blocking the event loop
        ...

A job's session comes from :func:`session_scope` (a context variable; ``Session.run`` sets it, and asyncio
tasks and ``asyncio.to_thread`` inherit it; a thread you start yourself does not: capture
:func:`current_session` and pass ``session=``). Outside any session the job counts as session ``"-"``.
A model that runs one job at a time (a llama.cpp context) is shared through a :class:`ModelPool`: up to
``slots`` instances, handed out in the same round-robin order. Speech is not queued here: synthesis
runs at once and the LLM steps aside (part 3).

**3. Speech first inside a generation** (:class:`SpeechFirst`, :data:`SPEECH_FIRST`). On a small CPU,
Piper synthesizing a reply's first piece and llama.cpp generating the rest of the reply slow each other
down (measured on 2 cores: Piper's time for a 12-word sentence doubles, 167 -> 333 ms). Only the synthesis
is on the path to the first sound; the LLM is 10-20x faster than speech is played, so it can wait. While
any synthesis runs, the embedded LLM's thread pauses between tokens (never longer than
``MAX_WAIT_SECS`` at a time, so a stuck synthesis cannot starve it).
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

MAX_WAIT_SECS = 2.0

NO_SESSION = "-"
_session: contextvars.ContextVar[str] = contextvars.ContextVar("voicebot_cpu_session", default=NO_SESSION)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# --- 1. threads per runtime ------------------------------------------------------------------------

@dataclass(frozen=True)
class ThreadPlan:
    cores: int
    sessions: int
    llm: int
    """llama.cpp ``n_threads`` (and ``n_threads_batch``)."""
    stt: int
    """CTranslate2 ``cpu_threads`` (intra-op threads of the Whisper model)."""
    onnx: int
    """onnxruntime ``intra_op_num_threads`` for Piper (Silero VAD and Smart-Turn run on 1 thread anyway)."""

    @property
    def slots(self) -> int:
        """How many heavy jobs may run at once so that they fill the cores without oversubscribing them."""
        return max(1, min(self.sessions, self.cores))

    def for_settings(self, settings: Any) -> ThreadPlan:
        """The plan with explicit ``llm.n_threads`` / ``stt.cpu_threads`` (> 0) from ``settings`` applied."""
        llm = getattr(getattr(settings, "llm", None), "n_threads", 0) or self.llm
        stt = getattr(getattr(settings, "stt", None), "cpu_threads", 0) or self.stt
        return ThreadPlan(self.cores, self.sessions, llm, stt, self.onnx)

    def describe(self) -> str:
        return (f"{self.cores} cores, {self.sessions} session(s): llama.cpp {self.llm}, CTranslate2 {self.stt}, "
                f"onnxruntime {self.onnx} thread(s); {self.slots} job(s) at once")


_sessions = 1


def set_sessions(n: int) -> None:
    """How many sessions this process runs at once (``serve``: its admission limit). Resizes the scheduler.
    Call before building the sessions: models already loaded keep their thread counts."""
    global _sessions
    if n < 1:
        raise ValueError("sessions must be >= 1")
    _sessions = n
    SCHEDULER.resize(thread_plan().slots)


def thread_plan(sessions: int | None = None, *, cores: int | None = None) -> ThreadPlan:
    """Threads per runtime for ``sessions`` concurrent sessions (default: :func:`set_sessions`'s) on
    ``cores`` cores (default: :func:`available_cores`)."""
    cores = cores or available_cores()
    sessions = max(1, sessions or _sessions)
    per_job = max(1, cores // min(sessions, cores))
    # llama.cpp's threads wait for each other at every step by spinning: one of them descheduled (other
    # work, other processes) stalls the rest. Half the share, like llama.cpp's own default (measured on 2
    # busy cores, one session: first token 437 ms with 1 thread, 4822 ms with 2; benchmarks/cpu.py).
    llm = max(1, per_job // 2)
    return ThreadPlan(cores=cores, sessions=sessions, llm=llm, stt=per_job, onnx=per_job)


# --- 2. fair scheduling of the shared models ------------------------------------------------------

class Work(enum.IntEnum):
    """What a job is; when several wait, lower values are let in first (then round robin by session)."""

    STT = 1
    """A transcription: short, and the start of every turn."""
    LLM = 2
    """One step of a generation (the prompt, or one token)."""
    OTHER = 3


@contextmanager
def session_scope(session_id: str) -> Iterator[None]:
    """Jobs started in this context (and the tasks and threads it spawns) belong to ``session_id``."""
    token = _session.set(session_id)
    try:
        yield
    finally:
        _session.reset(token)
        for scheduler in list(_SCHEDULERS):  # a long-running server sees many sessions come and go
            scheduler.forget(session_id)


def current_session() -> str:
    return _session.get()


_SCHEDULERS: weakref.WeakSet[CpuScheduler] = weakref.WeakSet()
"""Every scheduler of the process (the CPU's and each model pool's), so an ended session is forgotten by all."""


class _Waiter:
    __slots__ = ("session", "work", "seq", "granted", "event", "future", "_loop")

    def __init__(self, session: str, work: Work, seq: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.session, self.work, self.seq = session, work, seq
        self.granted = False
        self._loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future | None = loop.create_future() if loop is not None else None

    def wake(self) -> None:  # called with the scheduler's lock held
        self.granted = True
        if self.event is not None:
            self.event.set()
        elif self._loop is not None and self.future is not None:
            fut = self.future
            self._loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))


class CpuScheduler:
    """A fair semaphore: at most ``slots`` jobs at once; waiting jobs are let in by :class:`Work`, then round
    robin between sessions (the session let in longest ago first), then in order of arrival."""

    def __init__(self, slots: int) -> None:
        self._slots = max(1, slots)
        self._running = 0
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._served: dict[str, int] = {}
        self._seq = itertools.count()
        self._ticket = itertools.count(1)
        self.granted: dict[str, int] = {}
        """Jobs let in so far, per session (for tests and the benchmark); a session's entry goes when its
        :func:`session_scope` ends."""
        _SCHEDULERS.add(self)

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def resize(self, slots: int) -> None:
        with self._lock:
            self._slots = max(1, slots)
            self._dispatch()

    def forget(self, session: str) -> None:
        """Drop what is kept about ``session`` (its place in the round robin, its count) once it has ended."""
        with self._lock:
            if not any(w.session == session for w in self._waiting):
                self._served.pop(session, None)
                self.granted.pop(session, None)

    def _dispatch(self) -> None:  # lock held
        while self._waiting and self._running < self._slots:
            w = min(self._waiting, key=lambda w: (w.work, self._served.get(w.session, 0), w.seq))
            self._waiting.remove(w)
            self._running += 1
            self._served[w.session] = next(self._ticket)
            self.granted[w.session] = self.granted.get(w.session, 0) + 1
            w.wake()

    def _enqueue(self, work: Work, session: str | None, loop: asyncio.AbstractEventLoop | None) -> _Waiter:
        w = _Waiter(session or _session.get(), work, next(self._seq), loop)
        with self._lock:
            self._waiting.append(w)
            self._dispatch()
        return w

    def _release(self) -> None:
        with self._lock:
            self._running -= 1
            self._dispatch()

    def _abandon(self, w: _Waiter) -> None:
        """A waiter that gave up (cancelled, interrupted): out of the queue, or its place back if let in."""
        with self._lock:
            if w in self._waiting:
                self._waiting.remove(w)
                return
        if w.granted:
            self._release()

    @contextmanager
    def job(self, work: Work = Work.OTHER, *, session: str | None = None) -> Iterator[None]:
        """Blocking: wait for a place (from worker threads, never on the event loop)."""
        w = self._enqueue(work, session, None)
        try:
            assert w.event is not None
            w.event.wait()
        except BaseException:
            self._abandon(w)
            raise
        try:
            yield
        finally:
            self._release()

    @asynccontextmanager
    async def ajob(self, work: Work = Work.OTHER, *, session: str | None = None) -> AsyncIterator[None]:
        """For coroutines: waits for a place without blocking the event loop; cancellation-safe."""
        w = self._enqueue(work, session, asyncio.get_running_loop())
        try:
            assert w.future is not None
            await w.future
        except BaseException:
            self._abandon(w)
            raise
        try:
            yield
        finally:
            self._release()


M = TypeVar("M")


class ModelPool(Generic[M]):
    """Up to ``size`` instances of a model that runs one job at a time (a llama.cpp context), made on demand
    by ``factory`` and shared by every session of the process. ``with pool.use() as model:`` hands out a free
    instance, to the session served longest ago first (a plain lock lets in whichever thread the OS wakes, so
    one busy session could starve the others)."""

    def __init__(self, factory: Callable[[], M], size: int) -> None:
        self._factory = factory
        self._gate = CpuScheduler(size)
        self._free: list[M] = []
        self._lock = threading.Lock()
        self.made = 0

    @property
    def size(self) -> int:
        return self._gate.slots

    @property
    def granted(self) -> dict[str, int]:
        return self._gate.granted

    def first(self) -> M:
        """Make (or reuse) one instance now, so load errors surface while the session is built."""
        with self.use() as model:
            return model

    @contextmanager
    def use(self, *, session: str | None = None) -> Iterator[M]:
        with self._gate.job(Work.OTHER, session=session):
            with self._lock:
                model = self._free.pop() if self._free else None
            if model is None:
                model = self._factory()
                self.made += 1
            try:
                yield model
            finally:
                with self._lock:
                    self._free.append(model)


SCHEDULER = CpuScheduler(thread_plan().slots)


# --- 3. speech first inside a generation ----------------------------------------------------------

class SpeechFirst:
    def __init__(self) -> None:
        self._busy = 0
        self._cond = threading.Condition()

    @contextmanager
    def speaking(self) -> Iterator[None]:
        """Held by a TTS service while it synthesizes."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def wait_turn(self, timeout: float = MAX_WAIT_SECS) -> None:
        """Called by text generation between tokens: returns once no synthesis is running."""
        with self._cond:
            self._cond.wait_for(lambda: self._busy == 0, timeout=timeout)


SPEECH_FIRST = SpeechFirst()  # one per process: there is one CPU
