"""mode = "realtime": an end-to-end speech model (OpenAI Realtime API, or Gemini Live with ``realtime.provider =
"gemini"``, bot/realtime/gemini.py) hears and speaks, with moderated hold-back.

    input -> echo policy -> Silero VAD -> RealtimeService -> [transcript hooks -> TranscriptReceipt]
          -> output -> PlayoutMeter -> assistant aggregator

The local VAD only times the user's speech for turn tracking (same timings as the cascade) and notices
barge-in quickly; the server's VAD decides when a turn ends. The service holds the model's audio until the
transcript covering it has passed output moderation (``realtime.holdback``), see docs/realtime.md.
"""

from __future__ import annotations

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator

from bot.config import Settings
from bot.echo import make_echo_policy
from bot.realtime.client import RealtimeConnector, endpoints, resolve_realtime_key, voice_for
from bot.realtime.playout import PlayoutLedger, PlayoutMeter
from bot.realtime.refusal import RefusalVoice, piper_voice_for
from bot.realtime.service import Gate, RealtimeService
from moderation.config import ModerationConfig
from pipelines.base import BuildContext, BuiltPipeline, Capabilities, Mode, transcript_stage
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


class RealtimeMode(Mode):
    """``mode = "realtime"``: a speech-to-speech model (OpenAI Realtime, or Gemini Live with ``realtime.provider =
    "gemini"``) hears and speaks; its audio is held back until the transcript covering it passed output
    moderation."""

    name = "realtime"

    def capabilities(self, settings: Settings) -> Capabilities:
        # [tts]: Piper speaks the refusal line (and a greeting) in the persona's voice.
        return Capabilities(has_transcript=True, text_checkpoint=False, server_turn_detection=True,
                            sections=frozenset({"realtime", "tts"}))

    def preflight(self, settings: Settings) -> None:
        cfg = settings.realtime
        if cfg.provider == "gemini":
            from bot.realtime.gemini import resolve_gemini_key

            resolve_gemini_key(cfg)
        else:
            resolve_realtime_key(cfg)
            endpoints(cfg.base_url)

    def engine(self, settings: Settings) -> tuple[tuple[str, str], ...]:
        cfg = settings.realtime
        provider = (("provider", cfg.provider),) if cfg.provider != "openai" else ()
        return (("realtime", cfg.model), *provider, ("holdback", cfg.holdback))

    def build(self, ctx: BuildContext) -> BuiltPipeline:
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
        # Transcript processors decide whether a turn is answered: the service waits for their verdict
        # (the transcript comes back through the receipt, or does not) before it asks for a response.
        on_transcript, receipt = transcript_stage(ctx.hooks)
        service = RealtimeService(cfg=cfg, persona=ctx.persona, connector=connector, context=context,
                                  ledger=ledger, refusal=RefusalVoice.load(ctx.persona.refusal, onnx),
                                  piper_voice=onnx, input_gate=input_gate, output_gate=output_gate,
                                  input_rate=s.transport.sample_rate, transcript_receipt=receipt)
        pipeline = Pipeline([
            ctx.transport.input(),
            make_echo_policy(s, ctx.transport),
            *ctx.hooks.on_audio,
            make_vad(s.vad),
            service,
            *on_transcript,
            ctx.transport.output(),
            PlayoutMeter(ledger),
            LLMAssistantAggregator(context),
        ])
        holdback = (f"hold-back {cfg.holdback}, {cfg.chunk} chunks, max lag {cfg.max_lag_ms:g} ms" if output_gate
                    else "no hold-back (output moderation off)")
        turns = cfg.turn_detection if cfg.provider == "openai" else "automatic activity detection"
        return BuiltPipeline(pipeline=pipeline, context=context, models={
            "vad": f"silero (timings, barge-in); turns: server {turns}",
            "stt": "server input transcription" + (f": {cfg.transcription_model}" if cfg.provider == "openai"
                                                   else ""),
            "llm": f"realtime {cfg.provider} {cfg.model} at {connector.where}, voice {voice}",
            "tts": piper_desc,
            "moderation": f"{moderation_desc}; {holdback}",
        })
