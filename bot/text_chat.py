"""Text turns: one persona across text and voice.

A :class:`TextConversation` answers typed messages (``voicebot chat`` in a terminal, Discord text messages)
with the same persona, chat model (``llm.*``), moderation and conversation context as the voice session,
and reports each exchange as a turn with ``modality = "text"`` to the same :class:`~bot.turns.TurnTracker`,
so the audit log holds one conversation with text and voice turns in one numbered sequence.

A text turn is checked like a voice turn: the user's message by input moderation before the LLM sees it
(refused: the LLM is not asked and the persona's refusal is the reply), and the reply sentence by sentence
before it is posted, exactly like speech before TTS: the first blocked sentence and everything after it
are dropped and the refusal is posted in their place. If moderation cannot decide it blocks (fail-closed,
:func:`bot.processors.moderation.check_text`). With a ``post`` step (Discord: the message reply), the reply is
posted inside the turn, in messages of at most ``max_chars`` (cut between sentences), and the turn record and
the context hold only what was posted: a message that could not be posted (and the rest after it) was not said.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config import Settings
from bot.errors import VoicebotError
from bot.persona import Persona
from bot.processors.moderation import check_text
from bot.context_window import ContextOverflow
from bot.prompt_leak import PromptLeakGuard
from bot.services.llm import ChatClient, context_window, make_chat_client
from bot.text_split import split_sentences
from bot.turns import Turn, TurnTracker


@dataclass(frozen=True)
class TextReply:
    turn: Turn
    text: str
    """What to post: the approved sentences, the refusal, or empty when the LLM failed (see ``error``)."""
    refused: bool = False
    error: str | None = None


Post = Callable[[str], Awaitable[Any]]
"""Posts one message where the user reads it (Discord: a reply); raises if it was not posted."""


def pack_messages(pieces: list[str], max_chars: int | None) -> list[list[tuple[int, str]]]:
    """``pieces`` (sentences) in messages of at most ``max_chars`` (joined with spaces), in order, nothing cut
    off: a piece longer than a whole message is split at whitespace (with none, at the limit) over several.
    Each message is a list of ``(index of the piece, its text or part)``."""
    parts: list[tuple[int, str]] = []
    for i, piece in enumerate(pieces):
        while max_chars is not None and len(piece) > max_chars:
            cut = piece.rfind(" ", 1, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            parts.append((i, piece[:cut].rstrip()))
            piece = piece[cut:].lstrip()
        if piece:
            parts.append((i, piece))
    messages: list[list[tuple[int, str]]] = []
    for part in parts:
        if messages and (max_chars is None or len(" ".join(t for _, t in [*messages[-1], part])) <= max_chars):
            messages[-1].append(part)
        else:
            messages.append([part])
    return messages


def _record(verdict: Any, text: str, index: int | None = None) -> dict[str, Any]:
    """A verdict as the turn record holds it (the same shape as the voice cascade's)."""
    return {"text": text, **({"index": index} if index is not None else {}), **verdict.to_dict()}


class TextConversation:
    """Answers text turns into a shared ``context`` and ``tracker`` (those of a voice session, or its own)."""

    def __init__(self, settings: Settings, persona: Persona, context: LLMContext, tracker: TurnTracker, *,
                 chat: ChatClient | None = None) -> None:
        from moderation import build_moderator

        self.settings = settings
        self.persona = persona
        self.context = context
        self.tracker = tracker
        self.chat = chat or make_chat_client(settings.llm)
        self.window = context_window(settings.llm, persona, self.chat.client)  # as voice turns (bot/context_window.py)
        self._reported_upto = 0
        mod = settings.moderation
        self._input = build_moderator(mod.input, mod, name="input") if mod.input.enabled else None
        self._output = build_moderator(mod.output, mod, name="output") if mod.output.enabled else None
        self._guard = PromptLeakGuard.for_persona(persona)  # the persona's instructions are never posted
        self._lock = asyncio.Lock()  # one text turn at a time; the context grows in order

    def describe(self) -> dict[str, str]:
        mod = self.settings.moderation
        stages = [f"{name}: {'+'.join(stage.backends) or 'none'} ({stage.action})"
                  for name, stage in (("input", mod.input), ("output", mod.output)) if stage.enabled]
        return {"llm": f"{self.settings.llm.provider}: {self.chat.description}",
                "moderation": "; ".join(stages) or "off"}

    async def warmup(self) -> None:
        for moderator in (self._input, self._output):
            if moderator is not None:
                await moderator.warmup()

    async def ask(self, text: str, speaker: str = "user", *, post: Post | None = None,
                  max_chars: int | None = None) -> TextReply:
        """Answer ``text``. With ``post``, the reply is posted here (messages of at most ``max_chars``) and
        only what was posted is recorded as said and added to the context; without it the caller shows
        ``TextReply.text`` itself (a terminal)."""
        text = text.strip()
        if not text:
            raise VoicebotError("empty message: type something to say")
        async with self._lock:
            turn = self.tracker.text_turn(speaker, text)
            self.tracker.emit("user.text", turn=turn.index, speaker=speaker, text=text)
            try:
                return await self._answer(turn, text, post, max_chars)
            finally:
                self.tracker.finish_text_turn(turn)

    async def _post(self, turn: Turn, pieces: list[str], post: Post | None, max_chars: int | None
                    ) -> tuple[list[str], int, str | None]:
        """Post ``pieces``. Returns the texts posted (pieces, or parts of a long one) in order, how many of
        ``pieces`` went out whole, and why the rest did not (None: all did)."""
        if post is None:
            return list(pieces), len(pieces), None
        messages = pack_messages(pieces, max_chars)
        last_message = {i: n for n, message in enumerate(messages) for i, _ in message}  # where each piece ends
        posted: list[str] = []
        whole = 0
        for n, message in enumerate(messages):
            try:
                await post(" ".join(text for _, text in message))
            except Exception as exc:  # noqa: BLE001 - Forbidden, HTTPException, network: not said
                detail = str(exc).splitlines()[0] if str(exc) else "no detail"
                reason = f"could not post the reply ({type(exc).__name__}): {detail}"
                turn.errors.append(reason)
                self.tracker.emit("error", turn=turn.index, stage="post", message=reason)
                return posted, whole, reason
            posted.extend(text for _, text in message)
            while whole < len(pieces) and last_message.get(whole, -1) <= n:
                whole += 1
        return posted, len(pieces), None

    async def _answer(self, turn: Turn, text: str, post: Post | None, max_chars: int | None) -> TextReply:
        refusal = self.persona.refusal
        if self._input is not None:
            verdict = await check_text(self._input, text, "user", self.persona)
            turn.input_verdict = _record(verdict, text)
            self.tracker.emit("moderation.verdict", turn=turn.index, stage="input", text=text,
                              verdict=verdict.to_dict())
            if not verdict.allowed and self.settings.moderation.input.action == "refuse":
                # As in the voice cascade: the LLM never sees the turn; the refusal is what the bot said.
                turn.refused = True
                said, _, failed = await self._post(turn, [refusal], post, max_chars)
                turn.queued = said
                if said:
                    self.context.add_message({"role": "assistant", "content": refusal})
                return TextReply(turn, " ".join(said), refused=True, error=failed)

        user_message = {"role": "user", "content": text}
        started = time.monotonic()
        turn.t_llm_start = 0.0  # asked (Turn.awaiting_playback); text turns keep their timings in extra_timings
        try:
            conversation, trim = self.window.fit([*[dict(m) for m in self.context.get_messages()], user_message],
                                                 keep_from=self._reported_upto)
            if trim.upto > self._reported_upto:
                self.tracker.emit("llm.context_trimmed", turn=turn.index, **trim.audit(self.window, self._reported_upto))
                self._reported_upto = trim.upto
            messages = [{"role": "system", "content": self.persona.instructions}, *conversation]
            reply, first = await self._complete(messages)
        except Exception as exc:  # network, server, model, too long: one line, the turn is still recorded
            message = str(exc) if isinstance(exc, ContextOverflow) else \
                f"LLM failed ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
            turn.errors.append(message)
            turn.failed = True
            self.tracker.emit("error", turn=turn.index, stage="llm", message=message)
            self.tracker.emit("turn.failed", turn=turn.index, reason=message, fallback="")
            return TextReply(turn, "", error=message)
        done = time.monotonic()
        turn.llm_text = reply
        turn.extra_timings.update(llm_ttft_ms=round(((first or done) - started) * 1000.0, 1),
                                  reply_ms=round((done - started) * 1000.0, 1))

        sentences = split_sentences(reply)
        turn.generated_sentences = sentences
        said: list[str] = []
        approved: list[tuple[int, int, str]] = []  # (position in said, index, sentence): posted once they are
        for index, sentence in enumerate(sentences):
            if turn.refused:  # the rest of the reply after a blocked sentence is dropped, like speech before TTS
                self.tracker.emit("llm.sentence", turn=turn.index, index=index, text=sentence, fate="dropped")
                continue
            leak = self._guard.check(sentence)
            if leak is not None:
                turn.withheld.append({"index": index, "text": sentence, "reason": leak.reason})
                self.tracker.emit("llm.sentence", turn=turn.index, index=index, text=sentence, fate="withheld",
                                  reason=leak.reason)
                continue
            if self._output is not None:
                verdict = await check_text(self._output, sentence, "bot", self.persona)
                turn.output_verdicts.append(_record(verdict, sentence, index))
                self.tracker.emit("moderation.verdict", turn=turn.index, stage="output", text=sentence,
                                  verdict=verdict.to_dict())
                if not verdict.allowed and self.settings.moderation.output.action == "refuse":
                    turn.refused = True
                    said.append(refusal)
                    self.tracker.emit("llm.sentence", turn=turn.index, index=index, text=sentence, fate="blocked")
                    continue
            approved.append((len(said), index, sentence))
            said.append(sentence)
        posted, whole, failed = await self._post(turn, said, post, max_chars)
        text_posted = " ".join(posted)
        for position, index, sentence in approved:
            if position < whole:  # a sentence split over messages counts as posted only if all of it went out
                self.tracker.emit("llm.sentence", turn=turn.index, index=index, text=sentence, fate="posted")
            else:
                self.tracker.emit("llm.sentence", turn=turn.index, index=index, text=sentence, fate="dropped",
                                  reason=failed or "not posted")
        turn.queued = posted
        self.context.add_message(user_message)
        if text_posted:
            self.context.add_message({"role": "assistant", "content": text_posted})
        return TextReply(turn, text_posted, refused=turn.refused, error=failed)

    async def _complete(self, messages: list[dict[str, Any]]) -> tuple[str, float | None]:
        cfg = self.settings.llm
        stream = await self.chat.client.chat.completions.create(
            model=self.chat.model, messages=messages, stream=True, temperature=cfg.temperature,
            max_tokens=cfg.max_tokens)
        parts: list[str] = []
        first: float | None = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                if first is None:
                    first = time.monotonic()
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts).strip(), first


# --------------------------------------------------------------------------- voicebot chat


async def run_chat(settings: Settings, persona: Persona, read_line: Callable[[], str | None],
                   write: Callable[[str], None], *, prompt: str = "") -> Path | None:
    """A terminal conversation: read lines until EOF or ``/quit``, answer each. Returns the audit directory.

    It is a session of its own (its own context and audit log, header ``interface: "text chat"``); in
    ``voicebot discord`` the same :class:`TextConversation` shares the voice session's."""
    from bot.audit import AuditWriter
    from bot.audit_sink import AuditSink, session_header
    from bot.recorder import AudioRecorder
    from bot.turns import AnchoredClock

    tracker = TurnTracker(AnchoredClock(), lambda: None, vad_start_secs=settings.vad.start_secs,
                          vad_stop_secs=settings.vad.stop_secs)
    conversation = TextConversation(settings, persona, LLMContext(), tracker)
    writer = None
    if settings.audit.enabled:
        header = session_header(settings, persona, conversation.describe(), interface="text chat")
        from bot.audit.signing import signer_from_env

        writer = AuditWriter.open(settings.audit.dir, header, store_audio=False,
                                  signer=signer_from_env(settings.audit.key_env))
        AuditSink(writer, tracker, AudioRecorder(tracker))
    reason = "ended"
    try:
        await conversation.warmup()
        while True:
            if prompt:
                write(prompt)
            line = await asyncio.to_thread(read_line)
            if line is None or line.strip() in ("/quit", "/exit"):
                reason = "user quit" if line is not None else "ended"
                break
            if not line.strip():
                continue
            reply = await conversation.ask(line)
            if reply.error:
                write(f"error: {reply.error}\n")
            else:
                write(f"{persona.name}: {reply.text}\n")
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)) else \
            f"error: {type(exc).__name__}"
        raise
    finally:
        if writer is not None:
            await writer.aclose(reason=reason)
    return writer.dir if writer is not None else None


def stdin_line() -> str | None:
    line = sys.stdin.readline()
    return line if line else None
