"""Live sessions: talk to the bot through the microphone and speaker until Ctrl-C.

Ctrl-C (SIGINT) or SIGTERM ends the session cleanly: what the bot is saying is interrupted, the
pipeline gets its EndFrame, the devices are closed, the last turn is finished and the audit log is
closed (``Session.run`` does the last two in its ``finally``). A second Ctrl-C stops without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from pipecat.frames.frames import InterruptionFrame
from pipecat.pipeline.worker import PipelineWorker

from bot.config import Settings
from bot.echo import resolve_policy
from bot.persona import Persona
from bot.session import Session, SessionResult
from bot.turns import TurnTracker


class LiveStop:
    """What ends a live session: the first Ctrl-C asks for a clean stop, the second cancels."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.presses = 0
        self._main: asyncio.Task | None = None

    def press(self) -> None:
        self.presses += 1
        if self.presses == 1:
            self.requested.set()
        elif self._main is not None:
            self._main.cancel()

    @contextlib.contextmanager
    def installed(self):
        """Route SIGINT/SIGTERM to :meth:`press` while the session runs (where the platform allows)."""
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.press)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                pass
        try:
            yield self
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def condition(self):
        async def stop(tracker: TurnTracker, task: PipelineWorker) -> None:
            await self.requested.wait()
            if tracker.bot_speaking or tracker.llm_running:
                # Don't make the EndFrame wait behind a long answer: stop it the way a barge-in would.
                await task.queue_frame(InterruptionFrame())
                await asyncio.sleep(0.2)

        return stop


async def run_live(settings: Settings, persona: Persona, *, on_session: Callable[[Session], None] | None = None,
                   on_listening: Callable[[Session], None] | None = None,
                   stopper: LiveStop | None = None) -> SessionResult:
    """Talk through the configured microphone and speaker until Ctrl-C (or ``stopper.press()``)."""
    from bot.transports.local import LocalAudioTransport

    stopper = stopper or LiveStop()
    with stopper.installed():
        transport = LocalAudioTransport(settings.transport)  # opens both devices or fails in one line
        try:
            session = Session(settings, persona, transport)
            if on_session is not None:
                on_session(session)
            watcher = None
            if on_listening is not None:
                async def announce() -> None:
                    await transport.listening.wait()
                    on_listening(session)

                watcher = asyncio.create_task(announce(), name="voicebot-listening")
            try:
                return await session.run(stopper.condition())
            finally:
                if watcher is not None:
                    watcher.cancel()
        finally:
            transport.close()


def live_main(settings: Settings, persona: Persona, *, print_turn: Callable, echo: Callable[..., None]) -> int:
    """``voicebot run`` without ``--input``. Returns the exit code."""
    from bot.preflight import preflight

    preflight(settings)
    echo(f"voicebot: mode={settings.mode} persona={persona.name} llm={settings.llm.provider}")

    def print_errors(turn) -> None:
        for err in turn.errors:
            echo(f"[turn {turn.index}] error: {err}", err=True)

    def attach(session: Session) -> None:
        session.tracker.turn_listeners.append(print_turn)
        session.tracker.turn_listeners.append(print_errors)
        for stage, desc in session.result.models.items():
            echo(f"  {stage}: {desc}")
        policy = resolve_policy(settings.transport.echo, session.transport)
        echo(f"  audio: {session.transport.describe()}")
        echo(f"  echo: {policy}" + (" (the mic is muted while the bot speaks; use headphones and "
                                    "--set transport.echo=barge-in to interrupt it)" if policy == "half-duplex" else ""))

    def listening(session: Session) -> None:
        echo("listening: speak now (Ctrl-C to stop)")

    stopper = LiveStop()
    try:
        result = asyncio.run(run_live(settings, persona, on_session=attach, on_listening=listening,
                                      stopper=stopper))
    except asyncio.CancelledError:  # a second Ctrl-C
        echo("stopped without waiting (second Ctrl-C)", err=True)
        return 130
    if result.audit_dir:
        echo(f"audit log: {result.audit_dir}")
    if not stopper.requested.is_set():
        reason = result.errors[0] if result.errors else "the audio devices stopped"
        echo(f"error: the session ended on its own: {reason}", err=True)
        return 1
    echo(f"stopped after {len(result.turns)} turn(s)")
    return 0
