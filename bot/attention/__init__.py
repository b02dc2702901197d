"""When the bot speaks: the attention policy (``[attention]``), for every mode and transport.

* :mod:`bot.attention.gate` — whom it answers: all / addressed / relevant, on the user's transcripts
  (``SessionHooks.on_transcript``).
* :mod:`bot.attention.cues` — sound-cue detectors (smoke and CO alarm patterns) on the raw input audio.
* :mod:`bot.attention.speaker` — the alert the bot says unprompted when a cue is heard
  (``SessionHooks.on_audio``).

:func:`with_attention` adds them to a session's hooks; :class:`bot.session.Session` calls it for every session,
so the microphone, file, server and Discord transports all get the same policy. Every decision is in the audit
log (``attention.decision``, ``attention.cue``; docs/audit-log.md).
"""

from __future__ import annotations

from dataclasses import replace

from bot.attention.gate import AttentionGate, AttentionState, RespondTo, llm_judge, wake_names
from bot.attention.speaker import CueListener
from bot.config import Settings
from bot.errors import VoicebotError
from bot.persona import Persona
from pipelines.base import SessionHooks


def with_attention(settings: Settings, persona: Persona, hooks: SessionHooks, *,
                   respond_to: RespondTo | None = None) -> SessionHooks:
    """``hooks`` plus the attention gate and cue listener that ``settings.attention`` asks for.

    ``respond_to`` overrides ``attention.respond_to`` (Discord's ``discord.respond_to``). A caller that already
    placed an :class:`AttentionGate` keeps its own. Nothing is added for ``respond_to = "all"`` with no cues."""
    from pipelines import mode_for  # noqa: PLC0415 - pipelines imports this package's callers

    cfg = settings.attention
    policy = respond_to or cfg.respond_to
    caps = mode_for(settings).capabilities(settings)
    state = AttentionState()
    on_transcript = list(hooks.on_transcript)
    on_audio = list(hooks.on_audio)
    has_gate = any(isinstance(p, AttentionGate) for p in on_transcript)
    if not has_gate and (policy != "all" or cfg.cues):
        if not caps.has_transcript:
            if policy != "all":
                raise VoicebotError(f"attention.respond_to = {policy} needs the user's transcript, which mode "
                                    f"{settings.mode} does not give here: use respond_to = all")
        else:
            on_transcript.append(attention_gate(settings, persona, policy, state))
    elif has_gate:
        state = next(p for p in on_transcript if isinstance(p, AttentionGate)).state
    if cfg.cues and not any(isinstance(p, CueListener) for p in on_audio):
        if not caps.text_checkpoint:
            raise VoicebotError(f"attention.cues needs a mode whose own TTS speaks the alert (pipeline, "
                                f"audio-llm); mode {settings.mode} speaks with the model's voice")
        on_audio.append(_cue_listener(settings, persona, state))
    gated = any(isinstance(p, AttentionGate) and p.respond_to != "all" for p in on_transcript)
    return replace(hooks, on_transcript=tuple(on_transcript), on_audio=tuple(on_audio),
                   answer_empty_turns=hooks.answer_empty_turns and not gated)


def attention_gate(settings: Settings, persona: Persona, policy: RespondTo,
                   state: AttentionState | None = None) -> AttentionGate:
    """The gate for ``policy`` with the ``[attention]`` settings (``relevant``: the ``[llm]`` model judges)."""
    cfg = settings.attention
    judge = None
    if policy == "relevant":
        from bot.services.llm import make_chat_client  # noqa: PLC0415

        judge = llm_judge(make_chat_client(settings.llm), persona.name)
    return AttentionGate(policy, wake_names(persona), follow_up_secs=cfg.follow_up_secs, judge=judge,
                         judge_timeout_secs=cfg.judge_timeout_secs, state=state or AttentionState(),
                         ack_mute_secs=cfg.ack_mute_secs)


def _cue_listener(settings: Settings, persona: Persona, state: AttentionState):
    from bot.processors.moderation import check_text  # noqa: PLC0415
    from moderation import build_moderator  # noqa: PLC0415

    mod_cfg = settings.moderation
    moderator = build_moderator(mod_cfg.output, mod_cfg, name="output") if mod_cfg.output.enabled else None

    async def check(text: str) -> bool:
        if moderator is None:
            return True
        return (await check_text(moderator, text, "bot", persona)).allowed

    return CueListener(list(settings.attention.cues), dict(persona.cue_lines), check=check, state=state,
                       repeat_secs=settings.attention.cue_repeat_secs)


__all__ = ["AttentionGate", "AttentionState", "attention_gate", "with_attention", "wake_names"]
