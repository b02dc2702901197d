"""mode = "pipeline": VAD -> STT -> LLM -> TTS, with text in between that can be checked and logged."""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy, TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.config import Settings, VADConfig
from moderation.config import ModerationConfig
from bot.persona import Persona
from bot.processors.moderation import InputModerationGate, OutputModerationGate, SpeculationHost
from bot.processors.reply_chunks import ReplyChunks
from bot.prompt_leak import PromptLeakGuard
from bot.echo import make_echo_policy
from bot.preflight import check_audio_servers, check_chat_llm
from bot.services.llm import make_llm
from bot.services.stt import make_stt
from bot.services.tts import make_tts
from bot.turn_speculation import SpeculativeSilenceStop
from pipelines.base import BuildContext, BuiltPipeline, Capabilities, Mode, SessionHooks, transcript_stage


def make_vad(cfg: VADConfig, analyzer: SileroVADAnalyzer | None = None) -> VADProcessor:
    return VADProcessor(vad_analyzer=analyzer or make_vad_analyzer(cfg))


class TrackedSileroVAD(SileroVADAnalyzer):
    """Silero VAD that remembers the state its latest analysis returned (``analyze_audio``'s public result),
    so a turn strategy can tell speech that has begun but is not yet ``start_secs`` long (STARTING)."""

    state: VADState = VADState.QUIET

    async def analyze_audio(self, buffer: bytes) -> VADState:
        self.state = await super().analyze_audio(buffer)
        return self.state


def make_vad_analyzer(cfg: VADConfig) -> TrackedSileroVAD:
    params = VADParams(confidence=cfg.confidence, start_secs=cfg.start_secs, stop_secs=cfg.stop_secs,
                       min_volume=cfg.min_volume)
    return TrackedSileroVAD(params=params)


def make_turn_strategies(cfg: VADConfig, *, speculate: bool = False, needs_approval: bool = False,
                         vad: TrackedSileroVAD | None = None, context: LLMContext | None = None,
                         wait_for_transcript: bool = True) -> UserTurnStrategies:
    """How a user turn starts and ends. ``speculate`` (pipeline mode, silence end of turn): answer during
    the end-of-turn wait (:mod:`bot.turn_speculation`), wait longer after an unfinished clause
    (``vad.unfinished_wait_secs``) and join a turn the user resumes (``vad.resume_secs``, its withdrawn
    answer leaves ``context``) and resume an answer cut off by a noise (``vad.resume_after_noise``);
    ``needs_approval``: input moderation approves it; ``vad``: the analyzer
    whose onset state keeps a turn open while resumed speech is being confirmed;
    ``wait_for_transcript=False``: no transcript will ever come (audio-llm without transcription), the turn
    ends on the VAD and the silence timer alone."""
    if cfg.turn == "smart-turn":
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        analyzer = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=cfg.turn_max_secs))
        stop = [TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer, wait_for_transcript=wait_for_transcript)]
    elif speculate and cfg.speculate:
        onset = (lambda: vad.state != VADState.QUIET) if vad is not None else None
        acoustic = None
        if cfg.acoustic_check == "smart-turn":
            from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
            from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

            # asked explicitly at each pause: its own silence timeout must never decide
            acoustic = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=60.0))
        stop = [SpeculativeSilenceStop(user_speech_timeout=cfg.turn_timeout_secs, needs_approval=needs_approval,
                                       voice_onset=onset, unfinished_wait_secs=cfg.unfinished_wait_secs,
                                       resume_secs=cfg.resume_secs, context=context,
                                       resume_after_noise=cfg.resume_after_noise, acoustic=acoustic)]
    else:
        stop = [SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=cfg.turn_timeout_secs,
                                                  wait_for_transcript=wait_for_transcript)]
    return UserTurnStrategies(start=[VADUserTurnStartStrategy()], stop=stop)


def make_moderation_gates(cfg: ModerationConfig, persona: Persona, first_chunk: str = "clause",
                          speculation: SpeculationHost | None = None) -> tuple[list, list, str]:
    """(processors before the LLM, processors after it, description).

    A disabled input stage adds nothing; after the LLM there is always one processor that cuts the
    reply into the pieces TTS speaks (``tts.first_chunk``), withholds a piece that restates the persona's
    instructions (:mod:`bot.prompt_leak`), and checks the rest when output moderation is on."""
    from moderation import build_moderator

    before, after, desc = [], [], []
    guard = PromptLeakGuard.for_persona(persona)
    if cfg.input.enabled:
        before.append(InputModerationGate(build_moderator(cfg.input, cfg, name="input"), cfg.input, persona,
                                          speculation=speculation))
        desc.append(f"input: {'+'.join(cfg.input.backends) or 'none'} ({cfg.input.action})")
    if cfg.output.enabled:
        after.append(OutputModerationGate(build_moderator(cfg.output, cfg, name="output"), cfg.output, persona,
                                          first_chunk, guard=guard))
        desc.append(f"output: {'+'.join(cfg.output.backends) or 'none'} ({cfg.output.action})")
    else:
        after.append(ReplyChunks(first_chunk, guard=guard))
    return before, after, "; ".join(desc) or "off"


def pipeline_aggregators(context: LLMContext, turns: UserTurnStrategies, hooks: SessionHooks, *,
                         answer_empty_turns: bool = True) -> LLMContextAggregatorPair:
    """The user/assistant context aggregators of a text pipeline. pipecat answers a user turn that ended
    without a transcript (it asks the LLM to prompt the user again) unless the mode or the caller says not to
    (``SessionHooks.answer_empty_turns``)."""
    empty = {} if answer_empty_turns and hooks.answer_empty_turns else {"empty_user_turn": None}
    return LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(user_turn_strategies=turns,
                                                                                 **empty))


class PipelineMode(Mode):
    """``mode = "pipeline"``: the cascade, with text in between that is moderated and logged."""

    name = "pipeline"

    def capabilities(self, settings: Settings) -> Capabilities:
        return Capabilities(has_transcript=True, text_checkpoint=True, server_turn_detection=False,
                            sections=frozenset({"stt", "llm", "tts"}))

    def preflight(self, settings: Settings) -> None:
        check_chat_llm(settings.llm)
        check_audio_servers(settings)

    def engine(self, settings: Settings) -> tuple[tuple[str, str], ...]:
        return (("llm", settings.llm.provider),)

    def build(self, ctx: BuildContext) -> BuiltPipeline:
        s = ctx.settings
        stt, stt_desc = make_stt(s.stt)
        vad = make_vad_analyzer(s.vad)
        context = LLMContext()
        turns = make_turn_strategies(s.vad, speculate=True, needs_approval=s.moderation.input.enabled, vad=vad,
                                     context=context)
        speculation = next((x for x in turns.stop if isinstance(x, SpeculativeSilenceStop)), None)
        llm = make_llm(s.llm, ctx.persona, speculation=speculation)
        tts, tts_desc = make_tts(s.tts, ctx.persona)
        check_input, check_output, moderation_desc = make_moderation_gates(s.moderation, ctx.persona,
                                                                           s.tts.first_chunk, speculation)
        # A turn with no words that cut the bot off is resumed by the strategy, not answered by pipecat's
        # empty-turn LLM prompt.
        resumes = speculation is not None and s.vad.resume_after_noise
        aggregators = pipeline_aggregators(context, turns, ctx.hooks, answer_empty_turns=not resumes)
        pipeline = Pipeline([
            ctx.transport.input(),
            make_echo_policy(s, ctx.transport),  # mutes or cleans the mic while the bot speaks (bot/echo.py)
            *ctx.hooks.on_audio,
            make_vad(s.vad, vad),
            stt,
            *transcript_stage(ctx.hooks)[0],
            aggregators.user(),
            *check_input,
            llm.service,
            *check_output,
            *ctx.hooks.on_reply_text,
            tts,
            ctx.transport.output(),
            aggregators.assistant(),
        ])
        return BuiltPipeline(pipeline=pipeline, context=context,
                             models={"stt": stt_desc, "llm": f"{s.llm.provider}: {llm.model}", "tts": tts_desc,
                                     "vad": f"silero, turn={s.vad.turn}{', speculative' if speculation else ''}",
                                     "moderation": moderation_desc})
