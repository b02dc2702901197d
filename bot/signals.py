"""SIGINT and SIGTERM end every command the same way (Ctrl-C, ``docker stop``, systemd, ``kill``).

One helper for every async command (``run``, ``run --input``, ``replay``, ``discord``, ``serve``,
``compare``)::

    from bot.signals import run_until_stopped

    def command(...):
        result = run_until_stopped(lambda stop: my_async_main(..., stop=stop), grace_secs=1.0)

What happens on a signal while ``my_async_main`` runs:

* **first SIGINT or SIGTERM**: ``stop.requested`` is set and ``stop.signum`` records which signal it was.
  With ``grace_secs=None`` (default) the main coroutine is cancelled at once: ``Session.run`` closes the
  audit log with ``session.end`` (reason ``interrupted``) and ``run_file`` still writes the reply. With a
  grace period the command may stop on its own (a live session ends its pipeline with an EndFrame) and is
  cancelled only if it has not returned when the grace period is over. Either way a session is over within
  :data:`STOP_WITHIN_SECS`. The one exception is ``serve``, whose first signal starts a drain (new sessions
  refused, clients told to reconnect) of at most ``server.drain_secs``, its grace period plus a margin;
  a second signal ends it as below.
* **second signal**: cancelled at once.
* **third signal**: ``os._exit`` at once, without closing anything (for a process that is truly stuck).

When the main coroutine was cancelled because of a signal, :func:`run_until_stopped` raises
:class:`Interrupted` (a ``KeyboardInterrupt``, so existing ``except KeyboardInterrupt`` paths treat both
signals alike); ``bot.cli.main`` turns it into the conventional exit code: 130 for SIGINT, 143 for
SIGTERM (typer turns every ``KeyboardInterrupt`` into exit 130, so ``main`` asks :func:`interrupted_by`
which signal it was). When it returned on its own after a request, its value is returned and ``stop.exit_code`` says
how the process should exit.

Outside the event loop (loading models, argument parsing) :func:`install` makes SIGTERM raise
:class:`Interrupted` just as Python's default SIGINT handler raises ``KeyboardInterrupt``.

:func:`finish` ends the process once a command is done: everything it wrote is closed and flushed, then
the interpreter's teardown of native libraries (CTranslate2, onnxruntime, llama.cpp, livekit's FFI
runtime) is skipped. That teardown took 2-3 s on 2 busy cores (more than the 2 s a stop may take) and is
where livekit's tokio runtime can panic ("panic in a function that cannot unwind ... aborting").
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_WITHIN_SECS = 2.0
"""What every command promises: from the first signal to the process gone."""
DEFAULT_GRACE_SECS = 0.6
"""How long a command that stops gracefully gets before it is cancelled (cancelling + closing take the rest)."""


_last_signal: int | None = None


def interrupted_by() -> int | None:
    """The signal of the last :class:`Interrupted` raised in this process (None if none was).

    typer turns any ``KeyboardInterrupt`` into ``Exit(130)``; ``bot.cli.main`` asks this to exit 143 when
    the interrupt was a SIGTERM."""
    return _last_signal


class Interrupted(KeyboardInterrupt):
    """The command was stopped by ``signum``; ``exit_code`` is the conventional 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        global _last_signal
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        _last_signal = self.signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def exit_code_for(exc: BaseException) -> int:
    """130 for a plain KeyboardInterrupt, 128 + signal for :class:`Interrupted`."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def install() -> None:
    """Synchronous code: SIGINT and SIGTERM both raise :class:`Interrupted` in the main thread."""
    for sig in SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(sig, _raise_interrupted)


class Stop:
    """What a command sees of the signals: whether a stop was requested, and by which signal."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.signum: int | None = None
        self.count = 0
        self._listeners: list[Callable[[int], None]] = []

    @property
    def exit_code(self) -> int:
        """0 if no signal arrived, else 128 + the first signal's number (130 SIGINT, 143 SIGTERM)."""
        return 0 if self.signum is None else 128 + self.signum

    def on_request(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` on the first request (e.g. ``serve`` stops accepting sessions)."""
        self._listeners.append(callback)

    def request(self, signum: int = signal.SIGINT) -> None:
        """What a signal does; also callable directly (tests, a UI's stop button)."""
        self.count += 1
        if self.signum is None:
            self.signum = int(signum)
            self.requested.set()
            for callback in self._listeners:
                callback(self.signum)


def run_until_stopped(main: Callable[[Stop], Coroutine[Any, Any, T]], *,
                      grace_secs: float | None = None, stop: Stop | None = None) -> T:
    """``asyncio.run(main(stop))`` with SIGINT and SIGTERM handled alike (see the module docstring).

    Pass your own ``stop`` to read ``stop.signum`` / ``stop.exit_code`` after a graceful return."""
    stop = stop or Stop()

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        inner = asyncio.ensure_future(main(stop))
        cancelled_by_signal = False
        timer: asyncio.TimerHandle | None = None

        def cancel() -> None:
            nonlocal cancelled_by_signal
            if not inner.done():
                cancelled_by_signal = True
                inner.cancel()

        def on_signal(signum: int) -> None:
            nonlocal timer
            stop.request(signum)
            if stop.count >= 3:
                print(f"stopped at once ({signal.Signals(signum).name} x3)", file=sys.stderr, flush=True)
                os._exit(128 + signum)
            if stop.count >= 2 or grace_secs is None:
                cancel()
            elif timer is None:
                timer = loop.call_later(grace_secs, cancel)

        installed = []
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                pass
        try:
            try:
                return await inner
            except asyncio.CancelledError:
                if cancelled_by_signal and stop.signum is not None:
                    raise Interrupted(stop.signum) from None
                raise
        finally:
            if timer is not None:
                timer.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
            if installed:
                install()  # remove_signal_handler restored the defaults: SIGTERM must not kill us now

    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(wrapper())
    finally:
        try:
            _wind_down(loop, wait_for_threads=stop.signum is None)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


CLEANUP_WAIT_SECS = 0.2
"""After a signal, tasks still running when the command returns get this long to finish their cancellation."""


def _wind_down(loop: asyncio.AbstractEventLoop, *, wait_for_threads: bool) -> None:
    """What ``asyncio.run`` does after the main coroutine (cancel what is left, close async generators, shut
    the default executor down), except that after a signal nothing waits for long: a thread in the middle
    of a model call (a Whisper decode) cannot be interrupted, and waiting for it would break the promise of
    stopping within :data:`STOP_WITHIN_SECS`; :func:`finish` then exits without joining it."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        timeout = None if wait_for_threads else CLEANUP_WAIT_SECS
        loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                             "exception": task.exception(), "task": task})
    loop.run_until_complete(loop.shutdown_asyncgens())
    if wait_for_threads:
        loop.run_until_complete(loop.shutdown_default_executor())
    else:
        global _abandon_threads
        _abandon_threads = True


_abandon_threads = False
"""Set once a signal stopped a command while threads may still be busy: :func:`finish` does not join them."""


def finish(code: int) -> None:
    """End the process with ``code`` once the command is done, without the interpreter's teardown.

    Waits for non-daemon threads (as the interpreter would; not after a signal stopped the command: what
    they compute is no longer wanted), runs the ``atexit`` handlers (the audit writers close any log still
    open there), flushes stdout and stderr, then ``os._exit(code)``."""
    if not _abandon_threads:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
