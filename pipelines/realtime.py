"""mode = "realtime": an end-to-end speech model (OpenAI Realtime API, or Gemini Live with ``realtime.provider =
"gemini"``, bot/realtime/gemini.py) hears and speaks, with moderated hold-back.

    input -> echo policy -> Silero VAD -> RealtimeService -> output -> PlayoutMeter -> assistant aggregator

The local VAD only times the user's speech for turn tracking (same timings as the cascade) and notices
barge-in quickly; the server's VAD decides when a turn ends. The service holds the model's audio until the
transcript covering it has passed output moderation (``realtime.holdback``), see docs/realtime.md.
"""

from __future__ import annotations

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator

from bot.echo import make_echo_policy
from bot.realtime.client import RealtimeConnector, voice_for
from bot.realtime.playout import PlayoutLedger, PlayoutMeter
from bot.realtime.refusal import RefusalVoice, piper_voice_for
from bot.realtime.service import Gate, RealtimeService
from moderation.config import ModerationConfig
from pipelines.base import BuildContext, BuiltPipeline
from pipelines.cascade import make_vad


def make_gates(cfg: ModerationConfig) -> tuple[Gate | None, Gate | None, str]:
    """(input gate, output gate, description); a disabled stage has no gate."""
    from moderation import build_moderator

    gates: list[Gate | None] = []
    desc = []
    for name in ("input", "output"):
        stage = cfg.stage(name)
        if not stage.enabled:
            gates.append(None)
            continue
        gates.append(Gate(build_moderator(stage, cfg, name=name), stage))
        desc.append(f"{name}: {'+'.join(stage.backends) or 'none'} ({stage.action})")
    return gates[0], gates[1], "; ".join(desc) or "off"


def build_realtime(ctx: BuildContext) -> BuiltPipeline:
    s = ctx.settings
    cfg = s.realtime
    # checks the key and the URL before anything starts
    if cfg.provider == "gemini":
        from bot.realtime.gemini import GeminiConnector, gemini_voice

        connector: RealtimeConnector | GeminiConnector = GeminiConnector(cfg, ctx.persona)
        voice = gemini_voice(cfg, ctx.persona)
    else:
        connector = RealtimeConnector(cfg, ctx.persona)
        voice = voice_for(cfg, ctx.persona)
    onnx, piper_desc = piper_voice_for(s.tts, ctx.persona)
    input_gate, output_gate, moderation_desc = make_gates(s.moderation)
    context = LLMContext()
    ledger = PlayoutLedger()
    service = RealtimeService(cfg=cfg, persona=ctx.persona, connector=connector, context=context, ledger=ledger,
                              refusal=RefusalVoice.load(ctx.persona.refusal, onnx), piper_voice=onnx,
                              input_gate=input_gate, output_gate=output_gate,
                              input_rate=s.transport.sample_rate)
    pipeline = Pipeline([
        ctx.transport.input(),
        make_echo_policy(s, ctx.transport),
        make_vad(s.vad),
        service,
        ctx.transport.output(),
        PlayoutMeter(ledger),
        LLMAssistantAggregator(context),
    ])
    holdback = (f"hold-back {cfg.holdback}, {cfg.chunk} chunks, max lag {cfg.max_lag_ms:g} ms" if output_gate
                else "no hold-back (output moderation off)")
    return BuiltPipeline(pipeline=pipeline, context=context, models={
        "vad": f"silero (timings, barge-in); turns: server " + (cfg.turn_detection if cfg.provider == "openai" else "automatic activity detection"),
        "stt": "server input transcription" + (f": {cfg.transcription_model}" if cfg.provider == "openai" else ""),
        "llm": f"realtime {cfg.provider} {cfg.model} at {connector.where}, voice {voice}",
        "tts": piper_desc,
        "moderation": f"{moderation_desc}; {holdback}",
    })
