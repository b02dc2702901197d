"""Live sessions: talk to the bot through the microphone and speaker until Ctrl-C.

Ctrl-C (SIGINT) or SIGTERM ends the session cleanly: what the bot is saying is interrupted, the
pipeline gets its EndFrame, the devices are closed, the last turn is finished and the audit log is
closed (``Session.run`` does the last two in its ``finally``); the exit code is 130 (SIGINT) or 143
(SIGTERM). If that takes longer than ``bot.signals.DEFAULT_GRACE_SECS`` the session is cancelled (audit log
still closed); a second signal cancels at once. See :mod:`bot.signals`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from pipecat.frames.frames import InterruptionFrame
from pipecat.pipeline.worker import PipelineWorker

from bot.config import Settings
from bot.echo import resolve_policy
from bot.persona import Persona
from bot.session import Session, SessionResult
from bot.signals import DEFAULT_GRACE_SECS, Stop, run_until_stopped
from bot.turns import TurnTracker


def until_stopped(stop: Stop):
    """Session stop condition: once a stop is requested, cut what the bot is saying (as a barge-in would)
    so the EndFrame does not wait behind a long answer."""

    async def condition(tracker: TurnTracker, task: PipelineWorker) -> None:
        await stop.requested.wait()
        if tracker.bot_speaking or tracker.llm_running:
            await task.queue_frame(InterruptionFrame())
            await asyncio.sleep(0.2)

    return condition


async def run_live(settings: Settings, persona: Persona, *, on_session: Callable[[Session], None] | None = None,
                   on_listening: Callable[[Session], None] | None = None,
                   stop: Stop) -> SessionResult:
    """Talk through the configured microphone and speaker until a stop is requested (``stop.request()``:
    SIGINT or SIGTERM through :func:`bot.signals.run_until_stopped`)."""
    from bot.transports.local import LocalAudioTransport

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
            return await session.run(until_stopped(stop))
        finally:
            if watcher is not None:
                watcher.cancel()
    finally:
        transport.close()


def live_main(settings: Settings, persona: Persona, *, print_turn: Callable, echo: Callable[..., None],
              print_event: Callable[[str, dict], None] | None = None) -> int:
    """``voicebot run`` without ``--input``. Returns the exit code."""
    from pipelines import mode_for

    mode = mode_for(settings)
    mode.preflight(settings)
    echo(f"voicebot: {mode.describe(settings, persona).banner()}")

    def print_errors(turn) -> None:
        for err in turn.errors:
            echo(f"[turn {turn.index}] error: {err}", err=True)

    def attach(session: Session) -> None:
        session.tracker.turn_listeners.append(print_turn)
        session.tracker.turn_listeners.append(print_errors)
        if print_event is not None:
            session.tracker.event_listeners.append(print_event)
        for stage, desc in session.result.models.items():
            echo(f"  {stage}: {desc}")
        policy = resolve_policy(settings.transport.echo, session.transport)
        echo(f"  audio: {session.transport.describe()}")
        echo(f"  echo: {policy}" + (" (the mic is muted while the bot speaks; use headphones and "
                                    "--set transport.echo=barge-in to interrupt it)" if policy == "half-duplex" else ""))

    def listening(session: Session) -> None:
        echo("listening: speak now (Ctrl-C to stop)")

    stop = Stop()
    result = run_until_stopped(lambda stop: run_live(settings, persona, on_session=attach, on_listening=listening,
                                                     stop=stop), grace_secs=DEFAULT_GRACE_SECS, stop=stop)
    if result.audit_dir:
        echo(f"audit log: {result.audit_dir}")
    if stop.signum is None:
        reason = result.errors[0] if result.errors else "the audio devices stopped"
        echo(f"error: the session ended on its own: {reason}", err=True)
        return 1
    echo(f"stopped after {result.turn_count} turn(s) ({signal.Signals(stop.signum).name})")
    return stop.exit_code
