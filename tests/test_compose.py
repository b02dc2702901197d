"""Container files: docker-compose.yml validates offline, its VOICEBOT_* env maps onto the config schema,
the Dockerfile installs what the bot needs at run time, and .dockerignore keeps local junk out.

No Docker engine is needed: ``docker-compose config`` (installed by scripts/setup.sh) validates and
resolves the compose file offline; the Dockerfile is checked as text.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from bot.config import Settings, load_settings
from bot.errors import VoicebotError

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PREFIX = "VOICEBOT_"
SPECIAL_ENV = {"VOICEBOT_CONFIG",  # read by load_settings itself (the TOML file), not a schema field
               "VOICEBOT_TOKEN"}  # the serve token, named by server.token_env: a secret, never a setting
DEFAULT_OLLAMA_MODEL = "qwen2.5:0.5b"


# --- helpers -------------------------------------------------------------------------------------

def _compose_env() -> dict[str, str]:
    """The caller's environment minus anything that would change how the compose file resolves."""
    drop = ("VOICEBOT_", "COMPOSE_")
    return {k: v for k, v in os.environ.items()
            if not k.startswith(drop) and k not in ("PYTHONPATH", "PYTHONHOME")}


def _model_in(annotation: typing.Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_mapping(annotation: typing.Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is dict or any(_is_mapping(a) for a in typing.get_args(annotation))


def schema_env_key_error(name: str) -> str | None:
    """Why ``name`` is not a voicebot setting in the environment, or None if it is one.

    Walks ``Settings.model_fields`` the way pydantic-settings maps env vars: prefix ``VOICEBOT_``,
    ``__`` between nesting levels, case-insensitive. A ``dict`` field accepts any sub-key.
    """
    if not name.upper().startswith(PREFIX):
        return f"{name} does not start with {PREFIX}"
    if name.upper() in SPECIAL_ENV:
        return None
    parts = name[len(PREFIX):].lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:i]) or "the top level"
            return f"{name}: {part!r} is not a setting under {where} (known: {sorted(model.model_fields)})"
        rest = parts[i + 1:]
        if not rest:
            return None
        if _is_mapping(field.annotation):
            return None
        sub = _model_in(field.annotation)
        if sub is None:
            return f"{name}: {'.'.join(parts[:i + 1])} is a plain value, it has no sub-key {rest[0]!r}"
        model = sub
    return None


def _get(settings: Settings, env_name: str) -> typing.Any:
    value: typing.Any = settings
    for part in env_name[len(PREFIX):].lower().split("__"):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical, buf = [], ""
    for line in dockerfile.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    out = []
    for entry in logical:
        word, _, args = entry.strip().partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1]:]


def _apt_installed(instructions: list[tuple[str, str]]) -> set[str]:
    pkgs: set[str] = set()
    for word, args in instructions:
        if word != "RUN":
            continue
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if "apt-get" in command and "install" in command:
                    after = command[command.index("install") + 1:]
                    pkgs.update(t for t in after if not t.startswith("-") and "=" not in t)
                command = []
            else:
                command.append(token)
    return pkgs


def _setup_sh_apt_packages() -> list[str]:
    text = (REPO / "scripts" / "setup.sh").read_text()
    match = re.search(r"^apt_runtime=\(([^)]*)\)", text, re.MULTILINE)
    assert match, "scripts/setup.sh no longer defines apt_runtime=(...); update this test"
    return match.group(1).split()


def _dockerignored(path: str) -> bool:
    """Approximates Docker's .dockerignore matching for a top-level path: last matching rule wins."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip().lstrip("/").rstrip("/")
        pattern = pattern[3:] if pattern.startswith("**/") else pattern
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- (1) docker-compose.yml validates --------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose binary not found on PATH (scripts/setup.sh installs Debian's "
                    "docker-compose; `make setup` to get it)")
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config"], cwd=REPO, env=_compose_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def test_compose_config_validates(compose_config):
    services = compose_config["services"]
    assert {"ollama", "ollama-pull", "bot"} <= set(services)


def test_compose_services_are_wired(compose_config):
    services = compose_config["services"]
    ollama, pull, bot = services["ollama"], services["ollama-pull"], services["bot"]

    assert ollama["image"].startswith("ollama/ollama")
    assert any(v.endswith(":/root/.ollama:rw") or v.endswith(":/root/.ollama")
               for v in map(str, ollama["volumes"]))
    assert any("11434:11434" in str(p) for p in ollama["ports"])
    assert ollama["healthcheck"]["test"][-2:] == ["ollama", "list"]

    assert pull["image"] == ollama["image"]
    assert pull["command"] == ["pull", DEFAULT_OLLAMA_MODEL]
    assert _env_of(pull)["OLLAMA_HOST"] == "ollama:11434"
    assert pull["depends_on"]["ollama"]["condition"] == "service_healthy"

    assert Path(bot["build"]["context"]) == REPO
    assert bot["command"] == ["demo", "--out-dir", "/io"]
    assert bot["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert bot["depends_on"]["ollama-pull"]["condition"] == "service_completed_successfully"
    mounts = {v.split(":")[1] for v in map(str, bot["volumes"])}
    assert {"/data/audits", "/io"} <= mounts


# --- (2) the bot's VOICEBOT_* env maps onto the config schema -------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    return monkeypatch


def test_bot_env_is_valid_voicebot_config(compose_config, clean_env):
    env = {k: v for k, v in _env_of(compose_config["services"]["bot"]).items() if k.upper().startswith(PREFIX)}
    assert env, "the bot service sets no VOICEBOT_* variables"

    # Every key names a real setting. (Needed on top of load_settings: pydantic-settings silently
    # ignores an unknown *top-level* VOICEBOT_* variable; only unknown keys inside a section raise.)
    problems = [err for err in map(schema_env_key_error, env) if err]
    assert not problems, "\n".join(problems)

    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = load_settings()

    assert settings.llm.provider == "ollama"  # the native API, not Ollama's OpenAI-compatible /v1
    assert settings.llm.base_url == "http://ollama:11434"
    assert settings.llm.model == DEFAULT_OLLAMA_MODEL
    assert settings.audit.dir == "/data/audits"
    for key, value in env.items():
        actual = _get(settings, key)
        if isinstance(actual, str):
            assert actual == value, f"{key}={value!r} landed as {actual!r}"


def test_unknown_key_in_a_section_is_rejected(clean_env):
    clean_env.setenv("VOICEBOT_LLM__BASE_URLL", "http://ollama:11434/v1")
    with pytest.raises(VoicebotError, match="llm.base_urll"):
        load_settings()


def test_schema_walk_rejects_unknown_keys():
    # Top-level typos are the case load_settings lets through, so the walk must catch them.
    for bad in ("VOICEBOT_BASE_URL", "VOICEBOT_LLMX__PROVIDER", "OLLAMA_MODEL",
                "VOICEBOT_LLM__BASE_URLL", "VOICEBOT_LLM__MODEL__NAME", "VOICEBOT_MODERATION__INPUT__NOPE"):
        assert schema_env_key_error(bad) is not None, bad
    for good in ("VOICEBOT_PERSONA", "VOICEBOT_LLM__PROVIDER", "voicebot_audit__dir", "VOICEBOT_CONFIG",
                 "VOICEBOT_MODERATION__OUTPUT__COMBINE", "VOICEBOT_MODERATION__INPUT__THRESHOLDS__THREAT"):
        assert schema_env_key_error(good) is None, schema_env_key_error(good)


# --- (2b) profile "gpu": an audio LLM on vLLM and the audio-llm bot (docs/audio-llm.md) ---------------

DEFAULT_AUDIO_LLM_MODEL = "fixie-ai/ultravox-v0_5-llama-3_2-1b"


def test_gpu_profile_serves_an_audio_llm_with_vllm(compose_config):
    services = compose_config["services"]
    vllm, bot = services["vllm"], services["bot-audio"]
    assert vllm["profiles"] == ["gpu"] and bot["profiles"] == ["gpu"]
    for name, service in services.items():  # a plain `docker-compose up` starts no GPU service
        if name not in ("vllm", "bot-audio"):
            assert "gpu" not in service.get("profiles", []), name

    # vLLM's official image plus its `audio` extra, at the same version.
    dockerfile = Path(vllm["build"]["context"]) / vllm["build"]["dockerfile"]
    steps = _instructions(dockerfile.read_text())
    version = vllm["build"]["args"]["VLLM_VERSION"]
    assert ("FROM", "vllm/vllm-openai:v${VLLM_VERSION}") in steps
    assert any(word == "RUN" and '"vllm[audio]==${VLLM_VERSION}"' in args for word, args in steps)
    assert vllm["image"].endswith(f":{version}")

    command = vllm["command"]
    assert command[command.index("--model") + 1] == DEFAULT_AUDIO_LLM_MODEL
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert any(str(v).startswith("hf-cache:/root/.cache/huggingface") for v in vllm["volumes"])
    assert "hf-cache" in compose_config["volumes"]
    assert vllm["ports"] and all(str(p).startswith("127.0.0.1:") for p in vllm["ports"])  # no API key: local only
    assert "localhost:8000/health" in " ".join(vllm["healthcheck"]["test"])

    assert bot["depends_on"] == {"vllm": {"condition": "service_healthy"}}
    assert Path(bot["build"]["context"]) == REPO
    mounts = {v.split(":")[1] for v in map(str, bot["volumes"])}
    assert {"/data/audits", "/io"} <= mounts


def test_bot_audio_env_is_valid_voicebot_config(compose_config, clean_env):
    services = compose_config["services"]
    env = {k: v for k, v in _env_of(services["bot-audio"]).items() if k.upper().startswith(PREFIX)}
    problems = [err for err in map(schema_env_key_error, env) if err]
    assert not problems, "\n".join(problems)
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = load_settings()

    assert settings.mode == "audio-llm"
    assert settings.audio_llm.base_url == "http://vllm:8000/v1"
    command = services["vllm"]["command"]
    assert settings.audio_llm.model == command[command.index("--model") + 1]  # the name vLLM serves it under
    assert settings.audio_llm.transcribe_for_audit and settings.moderation.input.enabled
    assert settings.audit.dir == "/data/audits"
    for key, value in env.items():
        actual = _get(settings, key)
        if isinstance(actual, str):
            assert actual == value, f"{key}={value!r} landed as {actual!r}"


# --- (3) Dockerfile -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def test_dockerfile_entrypoint_is_the_console_script(dockerfile):
    scripts = _pyproject()["project"]["scripts"]
    assert scripts.get("voicebot") == "bot.cli:main"
    final = _final_stage(dockerfile)
    entrypoints = [args for word, args in final if word == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["voicebot"]
    cmds = [args for word, args in final if word == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["--help"]


def test_dockerfile_installs_runtime_apt_packages_in_final_stage(dockerfile):
    runtime = _setup_sh_apt_packages()  # setup.sh's apt_runtime; apt_test is for the test suite only
    assert {"libportaudio2", "libopus0", "libsndfile1", "espeak-ng"} <= set(runtime)
    final_pkgs = _apt_installed(_final_stage(dockerfile))
    missing = [p for p in runtime if p not in final_pkgs]
    assert not missing, f"final image lacks run-time packages from scripts/setup.sh: {missing}"
    # The compiler toolchain belongs to the build stage only.
    assert not final_pkgs & {"build-essential", "cmake", "gcc", "g++"}
    assert {"build-essential", "cmake"} <= _apt_installed(dockerfile)


def test_dockerfile_copies_every_package_and_bakes_no_secrets(dockerfile):
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [d.name for d in REPO.iterdir()
                if (d / "__init__.py").is_file() and any(fnmatch.fnmatchcase(d.name, pat) for pat in include)]
    copied = " ".join(args for word, args in dockerfile if word == "COPY")
    for needed in [*packages, "pyproject.toml", "README.md"]:  # README.md: pyproject's `readme`
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"Dockerfile does not COPY {needed}"
        assert not _dockerignored(needed), f".dockerignore excludes {needed}, which the build needs"

    final = _final_stage(dockerfile)
    envs = " ".join(args for word, args in final if word == "ENV")
    assert "VOICEBOT_AUDIT__DIR=/data/audits" in envs
    for key in re.findall(r"\b(VOICEBOT_\w+)=", envs):
        assert schema_env_key_error(key) is None, schema_env_key_error(key)
    assert any(word == "VOLUME" and "/data/audits" in args for word, args in final)
    assert any(word == "USER" and args not in ("root", "0") for word, args in final), "image runs as root"
    assert any(word == "WORKDIR" and args == "/app" for word, args in final)

    secret = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)\w*=\S", re.IGNORECASE)
    for word, args in dockerfile:
        if word in ("ENV", "ARG"):
            assert not secret.search(args), f"{word} {args} looks like a baked-in secret"


# --- (4) .dockerignore ----------------------------------------------------------------------------

def test_dockerignore_keeps_local_state_out():
    for path in (".venv", ".venv/lib/python3.11/site-packages", ".git", "audits", "io", "demo-reply.wav",
                 ".env", "bot/__pycache__/cli.cpython-311.pyc", ".pytest_cache"):
        assert _dockerignored(path), f".dockerignore does not exclude {path}"


# --- (2c) profile "scale": voicebot serve replicas behind HAProxy (docs/server.md) ------------------

HAPROXY_CFG = REPO / "docker" / "haproxy.cfg"


def _haproxy_sections(text: str) -> dict[str, list[str]]:
    """``{"backend bots": [directive lines], ...}`` from an haproxy.cfg, comments dropped."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(" ".join(line.split()))
    return sections


def test_scale_profile_runs_replicas_behind_a_sticky_proxy(compose_config, clean_env):
    services = compose_config["services"]
    bots, proxy = services["bot-serve"], services["proxy"]
    assert bots["profiles"] == ["scale"] and proxy["profiles"] == ["scale"]
    assert bots["command"][:1] == ["serve"] and bots["command"][bots["command"].index("--host") + 1] == "0.0.0.0"
    port = int(bots["command"][bots["command"].index("--port") + 1])
    assert "ports" not in bots  # reachable through the proxy only

    env = {k: v for k, v in _env_of(bots).items() if k.upper().startswith(PREFIX)}
    assert "VOICEBOT_TOKEN" in env and env["VOICEBOT_TOKEN"] == ""  # from the caller's env; none baked in
    problems = [err for err in map(schema_env_key_error, env) if err]
    assert not problems, "\n".join(problems)
    for key, value in env.items():
        if key not in SPECIAL_ENV:
            clean_env.setenv(key, value)
    settings = load_settings()
    assert settings.server.token_env == "VOICEBOT_TOKEN" and settings.audit.dir == "/data/audits"
    # Without a token a replica refuses to listen on 0.0.0.0: fail closed.
    from bot.server import VoicebotServer

    with pytest.raises(VoicebotError, match="VOICEBOT_TOKEN"):
        VoicebotServer(settings.model_copy(update={"server": settings.server.model_copy(
            update={"host": "0.0.0.0"})}), token=None)
    # Docker stops a replica with SIGTERM and waits stop_grace_period before killing: longer than the drain.
    grace = bots["stop_grace_period"]
    grace_secs = float(grace[:-1]) * (60 if grace.endswith("m") else 1)
    assert grace_secs > settings.server.drain_secs
    assert "/healthz" in " ".join(bots["healthcheck"]["test"])

    mount = next(v for v in map(str, proxy["volumes"]) if "haproxy.cfg" in v)
    assert Path(mount.split(":")[0]).resolve() == HAPROXY_CFG and mount.split(":")[1].endswith("haproxy.cfg")
    assert proxy["image"].startswith("haproxy:")
    cfg = _haproxy_sections(HAPROXY_CFG.read_text())
    backend = cfg["backend bots"]
    assert any(d.startswith("cookie ") and " insert " in f"{d} " and d.endswith("dynamic") for d in backend)
    assert any(d.startswith("dynamic-cookie-key ") for d in backend)  # sticky per browser
    assert "option httpchk GET /healthz" in backend and "http-check expect status 200" in backend  # drain
    assert f"server-template bot- 16 bot-serve:{port}" in backend
    assert "balance leastconn" in backend
    assert "timeout tunnel 1h" in cfg["defaults"]  # WebSocket sessions outlive the HTTP timeouts
    published = [str(p) for p in proxy["ports"]]
    assert any("8080" in p for p in published)
