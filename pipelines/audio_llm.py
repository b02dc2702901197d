"""mode = "audio-llm" (half-cascade): the LLM hears the user's turn audio and answers in text; our TTS speaks.

    input -> echo -> VAD -> Whisper (audit + moderation only) -> user aggregator -> input moderation
          -> audio LLM (turn audio as input_audio) -> output moderation -> TTS -> output -> assistant aggregator

The same VAD, turn strategies, moderation gates, TTS, transports and frames as the cascade, so turn
tracking and the audit log work unchanged. With ``audio_llm.transcribe_for_audit = false`` the Whisper
stage only cuts the speech into segments (no transcript, no input moderation: that combination must be
asked for explicitly) and a turn is answered as soon as the user's turn ends. See docs/audio-llm.md.
"""

from __future__ import annotations

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config import Settings
from bot.echo import make_echo_policy
from bot.preflight import check_audio_servers
from bot.processors.turn_audio import HeardSpeech, SpeechSegmenter, store_transcribed
from bot.services.audio_llm import check_ready, make_audio_llm, server_url
from bot.services.stt import make_stt
from bot.services.tts import make_tts
from pipelines.audio_in import AudioInMode
from pipelines.base import BuildContext, BuiltPipeline, transcript_stage
from pipelines.cascade import make_moderation_gates, make_turn_strategies, make_vad, pipeline_aggregators


class AudioLLMMode(AudioInMode):
    """``mode = "audio-llm"``: an audio-in LLM hears the turn, our TTS speaks its text answer."""

    name = "audio-llm"
    section = "audio_llm"
    server_turn_detection = False

    def preflight(self, settings: Settings) -> None:
        self.check_moderation(settings)
        check_audio_servers(settings)
        check_ready(settings.audio_llm)

    def engine(self, settings: Settings) -> tuple[tuple[str, str], ...]:
        return (("audio-llm", settings.audio_llm.model or "?"),)

    def build(self, ctx: BuildContext) -> BuiltPipeline:
        s = ctx.settings
        cfg = s.audio_llm
        transcribe = cfg.transcribe_for_audit
        self.check_moderation(s)

        context = LLMContext()
        heard = HeardSpeech(max_secs=max(60.0, 2 * cfg.max_audio_secs))
        llm = make_audio_llm(cfg, ctx.persona, heard, context, transcribed=transcribe)  # fails fast: key, server
        if transcribe:
            stt, stt_desc = make_stt(s.stt, on_transcribed=store_transcribed(heard))
            stt_desc += " (audit log and input moderation only; the LLM hears the audio)"
        else:
            stt, stt_desc = SpeechSegmenter(heard), "none (audio_llm.transcribe_for_audit = false)"
        tts, tts_desc = make_tts(s.tts, ctx.persona)
        check_input, check_output, moderation_desc = make_moderation_gates(s.moderation, ctx.persona,
                                                                           s.tts.first_chunk)
        # Without a transcript the turn ends on the VAD and the silence timer alone.
        strategies = make_turn_strategies(s.vad, wait_for_transcript=transcribe)
        # A turn Whisper heard no words in is not answered (in the cascade pipecat may prompt the LLM about
        # it, with a "developer" message and no audio to go with it).
        aggregators = pipeline_aggregators(context, strategies, ctx.hooks, answer_empty_turns=False)
        pipeline = Pipeline([
            ctx.transport.input(),
            make_echo_policy(s, ctx.transport),
            *ctx.hooks.on_audio,
            make_vad(s.vad),
            stt,
            *transcript_stage(ctx.hooks)[0],
            aggregators.user(),
            *check_input,
            llm,
            *check_output,
            *ctx.hooks.on_reply_text,
            tts,
            ctx.transport.output(),
            aggregators.assistant(),
        ])
        history = f"current turn + {cfg.history_audio_turns} earlier as audio, older as " + \
            ("transcripts" if transcribe else "placeholders")
        return BuiltPipeline(pipeline=pipeline, context=context,
                             models={"stt": stt_desc,
                                     "llm": f"audio-llm: {cfg.model} at {server_url(cfg)} "
                                            f"(input_audio {cfg.audio_format}, 16 kHz mono; {history})",
                                     "tts": tts_desc, "vad": f"silero, turn={s.vad.turn}",
                                     "moderation": moderation_desc})
