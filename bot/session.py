"""Run one session: build the pipeline for the configured mode, attach turn tracking, run until done."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.workers.runner import WorkerRunner
from pipecat.pipeline.worker import PipelineParams, PipelineWorker

from bot.audit import AuditWriter
from bot.audit.signing import signer_from_env
from bot.audit_sink import AuditSink, session_header
from bot.config import Settings
from bot.cpu import session_scope
from bot.errors import VoicebotError
from bot.outputs import REPLY_FORMATS, check_output_file, write_failed
from bot.persona import Persona
from bot.preflight import check_audit
from bot.recorder import AudioRecorder
from bot.transports.file import FileTransport, load_audio
from bot.turns import AnchoredClock, Turn, TurnTracker
from pipelines import BuildContext, BuiltPipeline, SessionHooks, build_pipeline

CANCEL_WAIT_SECS = 0.3
"""A cancelled session waits this long for the pipeline to wind down before closing its audit log."""
SETTLE_SECS = 1.5
"""After the input ends, the session ends once nothing has happened for this long."""
GEMINI_SETTLE_SECS = 4.5
"""The same for Gemini Live, which gives the user's transcript only once it starts answering: until then a
finished question looks like nothing happening."""


KEPT_TURNS = 200
""":attr:`SessionResult.turns` keeps the last this many turns (a server or Discord session can run for days;
the audit log has them all)."""


@dataclass
class SessionResult:
    turns: list[Turn] = field(default_factory=list)
    """The last :data:`KEPT_TURNS` turns; :attr:`turn_count` counts them all."""
    turn_count: int = 0
    errors: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    context_messages: list[dict[str, Any]] = field(default_factory=list)
    reply_path: Path | None = None
    reply_secs: float = 0.0
    audit_dir: Path | None = None


StopCondition = Callable[[TurnTracker, PipelineWorker], Awaitable[None]]


class Session:
    """A pipeline, its tracker and its task. ``run()`` returns when ``stop_when`` says so.

    ``Session(settings, persona, transport, hooks=SessionHooks(...))``: the mode's pipeline (``settings.mode``)
    on ``transport``, with the caller's hooks placed by the mode (:class:`pipelines.SessionHooks`: processors on
    the user's transcript and on the reply text, turn and event listeners). Raises VoicebotError in one line
    if the mode cannot be built or cannot honour a hook."""

    def __init__(self, settings: Settings, persona: Persona, transport: Any, hooks: SessionHooks | None = None) -> None:
        self.settings = settings
        self.persona = persona
        self.transport = transport
        from bot.attention import with_attention  # noqa: PLC0415 - the attention policy of [attention]

        self.hooks = with_attention(settings, persona, hooks or SessionHooks())
        check_audit(settings)  # before any model loads: a session whose log cannot be written does not start
        self.built: BuiltPipeline = build_pipeline(BuildContext(settings, persona, transport, self.hooks))
        self.clock = AnchoredClock()
        self.tracker = TurnTracker(self.clock, lambda: transport.clock.t0,
                                   vad_start_secs=settings.vad.start_secs, vad_stop_secs=settings.vad.stop_secs)
        self.tracker.turn_listeners.extend(self.hooks.on_turn)
        self.tracker.event_listeners.extend(self.hooks.on_event)
        self.recorder = AudioRecorder(self.tracker)
        self.result = SessionResult(models=dict(self.built.models))
        self.tracker.turn_listeners.append(self._keep_turn)
        self.tracker.resume_listeners.append(self._speak_again)
        self._pending: set[asyncio.Task] = set()
        self.audit: AuditWriter | None = None
        self.task = PipelineWorker(
            self.built.pipeline,
            params=PipelineParams(audio_in_sample_rate=settings.transport.sample_rate,
                                  audio_out_sample_rate=settings.transport.output_sample_rate),
            clock=self.clock,
            observers=[self.tracker, self.recorder],
            idle_timeout_secs=None,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )

    def _keep_turn(self, turn: Turn) -> None:
        self.result.turns.append(turn)
        del self.result.turns[:-KEPT_TURNS]
        self.result.turn_count += 1

    def _speak_again(self, sentences: list[str]) -> None:
        """A false interruption was undone (bot/turn_speculation.py): speak the cut answer's rest again.
        Only sentences that output moderation had already approved get here."""
        queued = asyncio.get_running_loop().create_task(self.task.queue_frames([TTSSpeakFrame(x) for x in sentences]))
        self._pending.add(queued)
        queued.add_done_callback(self._pending.discard)

    def open_audit(self, **header_extra: Any) -> None:
        """Start the audit log (if enabled). Called before the pipeline runs, so no turn is missed."""
        if not self.settings.audit.enabled or self.audit is not None:
            return
        header = session_header(self.settings, self.persona, self.result.models, **header_extra)
        self.audit = AuditWriter.open(self.settings.audit.dir, header, store_audio=self.settings.audit.store_audio,
                                      signer=signer_from_env(self.settings.audit.key_env))
        AuditSink(self.audit, self.tracker, self.recorder)
        self.result.audit_dir = self.audit.dir
        drops = getattr(self.transport.input(), "drops", None)  # bounded inputs (bot/transports/overload.py)
        if drops is not None:
            audit = self.audit
            drops.listeners.append(lambda event: audit.record("audio.dropped", event.as_record()))

    async def run(self, stop_when: StopCondition) -> SessionResult:
        self.open_audit()
        reason = "ended"
        try:
            with session_scope(self.audit.session_id if self.audit is not None else f"session-{id(self):x}"):
                return await self._run(stop_when)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) else \
                f"error: {type(exc).__name__}"
            raise
        finally:
            if self.audit is not None:
                await self.audit.aclose(reason=reason)

    async def _run(self, stop_when: StopCondition) -> SessionResult:
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        if self.settings.greet and self.persona.greeting:
            self.tracker.greeting(self.persona.greeting)
            await self.task.queue_frame(TTSSpeakFrame(self.persona.greeting))
        await runner.add_workers(self.task)
        run_task = asyncio.create_task(runner.run(), name="voicebot-pipeline")
        stop_task = asyncio.create_task(stop_when(self.tracker, self.task), name="voicebot-stop")
        try:
            done, _ = await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop_task in done and not run_task.done():
                stop_task.result()
                await self.task.queue_frame(EndFrame())
                try:
                    await asyncio.wait_for(asyncio.shield(run_task), timeout=15)
                except TimeoutError:
                    await self.task.cancel()
            await run_task
        finally:
            stop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stop_task
            if not run_task.done():
                # Cancelled (a signal): pipecat's cancel waits for work running on threads (a Whisper decode
                # cannot be interrupted), so give it CANCEL_WAIT_SECS and close the session regardless
                # (bot/signals.py: the process then exits without waiting for those threads).
                # (asyncio.wait, not wait_for: wait_for waits for a timed-out cancel to finish.)
                cancelling = asyncio.ensure_future(self.task.cancel())
                await asyncio.wait({run_task, cancelling}, timeout=CANCEL_WAIT_SECS,
                                   return_when=asyncio.ALL_COMPLETED)
            self.tracker.cut_off()  # stopped while the bot talked (a signal): that answer was cut
            self.tracker.finish_all()
            self.result.errors = list(self.tracker.errors)
            self.result.context_messages = [dict(m) for m in self.built.context.get_messages()]
        return self.result


def until_file_done(input_done: asyncio.Event, max_reply_secs: float, settle_secs: float = SETTLE_SECS) -> StopCondition:
    """Stop once the input file has been heard and the bot has had its say (or the time is up)."""

    async def stop(tracker: TurnTracker, _task: PipelineWorker) -> None:
        await input_done.wait()
        deadline = time.monotonic() + max_reply_secs
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            pending = tracker.current is not None and bool(tracker.current.transcript) \
                and tracker.current.t_bot_stop is None and not tracker.current.errors
            quiet = time.monotonic() - tracker.last_activity > settle_secs
            if not tracker.busy and not pending and quiet:
                return

    return stop


async def run_file(settings: Settings, persona: Persona, input_path: str | Path, output_path: str | Path,
                   *, on_session: Callable[[Session], None] | None = None,
                   hooks: SessionHooks | None = None,
                   on_warning: Callable[[str], None] | None = None) -> SessionResult:
    """Answer the speech in ``input_path``; write what the bot said to ``output_path`` on the same timeline.

    Every output is checked before any work (:mod:`bot.outputs`; the audit folder by :class:`Session`); a
    write that still fails at the end is one line, after the audit log was closed."""
    output_path = check_output_file(output_path, what="reply", option="--output", formats=REPLY_FORMATS,
                                    inputs=[input_path])
    samples = load_audio(input_path, settings.transport.sample_rate, warn=on_warning)
    transport = FileTransport(samples, in_rate=settings.transport.sample_rate,
                              out_rate=settings.transport.output_sample_rate)
    session = Session(settings, persona, transport, hooks)
    if on_session is not None:
        on_session(session)
    failed_write: VoicebotError | None = None
    try:
        gemini = settings.mode == "realtime" and settings.realtime.provider == "gemini"
        result = await session.run(until_file_done(transport.input().input_done, settings.transport.max_reply_secs,
                                                   GEMINI_SETTLE_SECS if gemini else SETTLE_SECS))
    finally:
        # Whatever happened, keep what the bot said so far.
        try:
            session.result.reply_secs = transport.write_reply(output_path)
            session.result.reply_path = output_path
        except OSError as exc:
            kept = (f"the bot's audio of each turn is in the audit log {session.result.audit_dir}"
                    if session.result.audit_dir and settings.audit.store_audio else "nothing else kept it")
            failed_write = write_failed("reply", output_path, exc, kept)
    if failed_write is not None:
        raise failed_write
    return result
