"""mode = "interaction": the AudioInteraction model hears the input as a stream and decides itself when to speak.

    input -> echo -> VAD -> Whisper (audit + input moderation only) -> user aggregator -> input moderation
          -> AudioInteraction server (every 400 ms chunk posted; replies from its event stream)
          -> output moderation -> TTS -> output -> assistant aggregator

There are no turns for the model: it is sent all of the input, and its ⟨Speak⟩/⟨Silent⟩ decisions are its own
(audited as ``interaction.decision`` spans). The VAD and Whisper give the audit log its user turns and input
moderation its text; the replies are moderated and spoken like audio-llm's. See docs/interaction.md.
"""

from __future__ import annotations

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config import Settings
from bot.echo import make_echo_policy
from bot.preflight import check_audio_servers
from bot.services.interaction import InteractionService, check_server, server_url
from bot.services.stt import make_stt
from bot.services.tts import make_tts
from pipelines.audio_in import AudioInMode
from pipelines.base import BuildContext, BuiltPipeline, transcript_stage
from pipelines.cascade import make_moderation_gates, make_turn_strategies, make_vad, pipeline_aggregators


class InteractionMode(AudioInMode):
    """``mode = "interaction"``: the AudioInteraction server listens always and speaks when it decides to."""

    name = "interaction"
    section = "interaction"
    server_turn_detection = True

    def preflight(self, settings: Settings) -> None:
        self.check_moderation(settings)
        check_audio_servers(settings)
        check_server(settings.interaction)

    def engine(self, settings: Settings) -> tuple[tuple[str, str], ...]:
        return (("interaction", server_url(settings.interaction)),)

    def build(self, ctx: BuildContext) -> BuiltPipeline:
        s = ctx.settings
        cfg = s.interaction
        transcribe = cfg.transcribe_for_audit
        self.check_moderation(s)
        check_server(cfg)  # fails fast, in one line

        context = LLMContext()
        stages = []
        stt_desc = "none (interaction.transcribe_for_audit = false)"
        if transcribe:
            stt, stt_desc = make_stt(s.stt)
            stt_desc += " (audit log and input moderation only; the model hears the audio stream)"
            stages.append(stt)
        tts, tts_desc = make_tts(s.tts, ctx.persona)
        check_input, check_output, moderation_desc = make_moderation_gates(s.moderation, ctx.persona,
                                                                           s.tts.first_chunk)
        strategies = make_turn_strategies(s.vad, wait_for_transcript=transcribe)
        aggregators = pipeline_aggregators(context, strategies, ctx.hooks, answer_empty_turns=False)
        model = InteractionService(cfg, hold_for_verdict=bool(check_input) or bool(ctx.hooks.on_transcript))
        pipeline = Pipeline([
            ctx.transport.input(),
            make_echo_policy(s, ctx.transport),
            *ctx.hooks.on_audio,
            make_vad(s.vad),
            *stages,
            *transcript_stage(ctx.hooks)[0],
            aggregators.user(),
            *check_input,
            model,
            *check_output,
            *ctx.hooks.on_reply_text,
            tts,
            ctx.transport.output(),
            aggregators.assistant(),
        ])
        return BuiltPipeline(pipeline=pipeline, context=context,
                             models={"stt": stt_desc,
                                     "llm": f"interaction: AudioInteraction server at {server_url(cfg)} "
                                            "(400 ms chunks of 16 kHz mono s16le; it decides when to speak)",
                                     "tts": tts_desc, "vad": f"silero, turn={s.vad.turn}",
                                     "moderation": moderation_desc})
