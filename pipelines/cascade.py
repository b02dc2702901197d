"""mode = "pipeline": VAD -> STT -> LLM -> TTS, with text in between that can be checked and logged."""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
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

from bot.config import VADConfig
from bot.services.llm import make_llm
from bot.services.stt import make_stt
from bot.services.tts import make_tts
from pipelines.base import BuildContext, BuiltPipeline


def make_vad(cfg: VADConfig) -> VADProcessor:
    params = VADParams(confidence=cfg.confidence, start_secs=cfg.start_secs, stop_secs=cfg.stop_secs,
                       min_volume=cfg.min_volume)
    return VADProcessor(vad_analyzer=SileroVADAnalyzer(params=params))


def make_turn_strategies(cfg: VADConfig) -> UserTurnStrategies:
    if cfg.turn == "smart-turn":
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        stop = [TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())]
    else:
        stop = [SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=cfg.turn_timeout_secs)]
    return UserTurnStrategies(start=[VADUserTurnStartStrategy()], stop=stop)


def build_cascade(ctx: BuildContext) -> BuiltPipeline:
    s = ctx.settings
    stt, stt_desc = make_stt(s.stt)
    llm = make_llm(s.llm, ctx.persona)
    tts, tts_desc = make_tts(s.tts, ctx.persona)

    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(user_turn_strategies=make_turn_strategies(s.vad)))
    pipeline = Pipeline([
        ctx.transport.input(),
        make_vad(s.vad),
        stt,
        aggregators.user(),
        llm.service,
        tts,
        ctx.transport.output(),
        aggregators.assistant(),
    ])
    return BuiltPipeline(pipeline=pipeline, context=context,
                         models={"stt": stt_desc, "llm": f"{s.llm.provider}: {llm.model}", "tts": tts_desc,
                                 "vad": f"silero, turn={s.vad.turn}"})
