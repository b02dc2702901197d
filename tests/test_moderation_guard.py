"""The ``guard`` backend against local OpenAI-compatible servers answering like each guard model family.

The stand-in server speaks ``POST /v1/chat/completions``; every response it sends is first validated
with the ``openai`` package's own ``ChatCompletion`` type. What the answers look like follows each
model's documentation (Llama Guard 3 ``unsafe\\nS1,S10``, ShieldGemma ``Yes``/``No``, Qwen3Guard
``Safety: ...\\nCategories: ...``, Granite Guardian ``Yes``/``No`` and 3.3's ``<score> yes </score>``).
No real guard model ran in these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai.types.chat import ChatCompletion

from moderation import build_moderator
from moderation.backends.guard import GuardFormat, GuardFormatError, detect_format, parse_guard_output
from moderation.config import ModerationConfig, StageConfig

ROOT = Path(__file__).resolve().parent.parent


def classified(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """What a guard model's chat template makes of ``messages``: ``("prompt" | "response", text)`` of the last
    message, or None for a conversation the templates reject (Llama Guard 3's raises unless the roles
    alternate from ``user``; ShieldGemma's judges a response only when an assistant message is last)."""
    roles = [m.get("role") for m in messages]
    if not roles or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)):
        return None
    if not all(isinstance(m.get("content"), str) for m in messages):
        return None
    return ("response" if roles[-1] == "assistant" else "prompt"), messages[-1]["content"]


class FakeGuardServer:
    """``/v1/chat/completions`` on 127.0.0.1 answering ``answer(text)`` for the message the guard model would
    classify (the last; ``kinds`` records whether as a prompt or a response), optionally after a delay. A
    conversation no guard template accepts is answered 400, as a server whose template raises does."""

    def __init__(self, answer: Callable[[str], str], delay_s: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.kinds: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body})
                if delay_s:
                    time.sleep(delay_s)
                judged = classified(body["messages"])
                if judged is None:
                    self.send_error(400, "Conversation roles must alternate user/assistant/user/assistant/...")
                    return
                kind, text = judged
                outer.kinds.append(kind)
                payload = {
                    "id": "chatcmpl-guard", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "content": answer(text)}}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53},
                }
                ChatCompletion.model_validate(payload)  # the SDK's own type accepts what we send
                data = json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeGuardServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def guard_moderator(base_url: str, model: str, timeout_ms: float = 10000, **extra: Any):
    config = ModerationConfig(guard_base_url=base_url, guard_model=model, timeout_ms=timeout_ms, **extra)
    return build_moderator(StageConfig(backends=["guard"]), config)


def check(moderator, text: str, role: str = "user"):
    return asyncio.run(moderator.check(text, role, None))


def bad_when(word: str, unsafe: str, safe: str) -> Callable[[str], str]:
    return lambda text: unsafe if word in text else safe


FAMILIES = [
    # (model name as served, unsafe answer, safe answer, categories of the unsafe answer)
    ("llama-guard3:1b", "unsafe\nS1,S10", "safe", {"violence", "hate"}),
    ("meta-llama/Llama-Guard-3-8B", "\n\nunsafe\nS11", "\n\nsafe", {"self_harm"}),
    ("shieldgemma:2b", "Yes", "No", {"toxicity"}),
    ("Qwen/Qwen3Guard-Gen-0.6B", "Safety: Unsafe\nCategories: Violent, Suicide & Self-Harm",
     "Safety: Safe\nCategories: None", {"violence", "self_harm"}),
    ("granite3-guardian:2b", "Yes", "No", {"toxicity"}),
    ("ibm/granite3.3-guardian:8b", "<think>The message threatens a person.</think>\n<score> yes </score>",
     "<score> no </score>", {"toxicity"}),
]


@pytest.mark.parametrize(("model", "unsafe", "safe", "categories"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_guard_family_blocks_and_allows(model: str, unsafe: str, safe: str, categories: set[str]) -> None:
    with FakeGuardServer(bad_when("kill", unsafe, safe)) as server:
        mod = guard_moderator(server.base_url, model)
        bad = check(mod, "I will kill you")
        good = check(mod, "what a nice day")
    assert not bad.allowed and set(bad.categories) == categories, bad.reason
    assert good.allowed, good.reason
    details = bad.backends[0]["details"]
    assert details["model"] == model and details["format"] == detect_format(model).value
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == model and request["body"]["temperature"] == 0
    assert request["body"]["messages"] == [{"role": "user", "content": "I will kill you"}]
    assert server.kinds == ["prompt", "prompt"]


@pytest.mark.parametrize(("model", "unsafe", "safe", "categories"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_a_bot_reply_is_classified_as_a_response_not_as_a_prompt(model: str, unsafe: str, safe: str,
                                                                  categories: set[str]) -> None:
    with FakeGuardServer(bad_when("kill", unsafe, safe)) as server:
        mod = guard_moderator(server.base_url, model)
        bad = check(mod, "I will kill you", role="bot")
        good = check(mod, "what a nice day", role="bot")
    assert not bad.allowed and set(bad.categories) == categories, bad.reason
    assert good.allowed, good.reason
    # The chat templates judge the last message, and an assistant one as the model's response.
    assert server.requests[0]["body"]["messages"] == [{"role": "user", "content": ""},
                                                      {"role": "assistant", "content": "I will kill you"}]
    assert server.kinds == ["response", "response"]


def test_the_stand_in_rejects_what_a_guard_template_rejects() -> None:
    assert classified([{"role": "assistant", "content": "hi"}]) is None  # a reply with no user turn before it
    assert classified([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) is None
    assert classified([{"role": "user", "content": "hi"}]) == ("prompt", "hi")


def test_qwen3guard_controversial_is_strict_by_default_and_loose_with_a_threshold() -> None:
    answer = "Safety: Controversial\nCategories: Politically Sensitive Topics"
    with FakeGuardServer(lambda _: answer) as server:
        strict = check(guard_moderator(server.base_url, "qwen3guard:4b"), "a political take")
        config = ModerationConfig(guard_base_url=server.base_url, guard_model="qwen3guard:4b", timeout_ms=10000)
        loose_stage = StageConfig(backends=["guard"], thresholds={"toxicity": 0.65})
        loose = asyncio.run(build_moderator(loose_stage, config).check("a political take", "user", None))
    assert not strict.allowed and strict.scores["toxicity"] == 0.6
    assert loose.allowed


def test_unexpected_answer_fails_closed_and_shows_it() -> None:
    with FakeGuardServer(lambda _: "I'm sorry, I can't help with that.") as server:
        verdict = check(guard_moderator(server.base_url, "llama-guard3:8b"), "hello")
    assert not verdict.allowed and verdict.categories == ["backend_error"]
    assert "backend guard failed: GuardFormatError" in verdict.reason and "failing closed" in verdict.reason
    assert "I'm sorry" in verdict.reason


def test_slow_guard_times_out_and_fails_closed() -> None:
    with FakeGuardServer(lambda _: "safe", delay_s=1.5) as server:
        start = time.perf_counter()
        verdict = check(guard_moderator(server.base_url, "llama-guard3:1b", timeout_ms=200), "hello")
        elapsed = time.perf_counter() - start
    assert not verdict.allowed and "failing closed" in verdict.reason
    assert "guard" in verdict.reason and elapsed < 1.4


def test_unreachable_guard_server_fails_closed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = check(guard_moderator(f"http://127.0.0.1:{port}/v1", "llama-guard3:1b"), "hello")
    assert not verdict.allowed and "backend guard failed" in verdict.reason and "failing closed" in verdict.reason


def test_unknown_model_family_says_what_to_set() -> None:
    verdict = check(guard_moderator("http://127.0.0.1:9/v1", "my-own-guard"), "hello")
    assert not verdict.allowed and "moderation.guard_format" in verdict.reason
    with FakeGuardServer(lambda _: "unsafe\nS10") as server:
        forced = check(guard_moderator(server.base_url, "my-own-guard", guard_format="llama_guard"), "hello")
    assert not forced.allowed and forced.categories == ["hate"]


def test_api_key_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VB_TEST_GUARD_KEY", raising=False)
    missing = check(guard_moderator("http://127.0.0.1:9/v1", "llama-guard3:1b", guard_api_key_env="VB_TEST_GUARD_KEY"),
                    "hello")
    assert not missing.allowed and "VB_TEST_GUARD_KEY" in missing.reason


@pytest.mark.parametrize(("fmt", "answer", "scores"), [
    (GuardFormat.llama_guard, "unsafe\nS4", {"sexual_minors": 1.0}),
    (GuardFormat.llama_guard, "unsafe", {"toxicity": 1.0}),
    (GuardFormat.llama_guard, "unsafe\nS99", {"toxicity": 1.0}),
    (GuardFormat.shieldgemma, "No.", {}),
    (GuardFormat.qwen3guard, "Safety: Unsafe\nCategories: Sexual Content or Sexual Acts\nRefusal: No",
     {"sexual": 1.0}),
    (GuardFormat.qwen3guard, "Safety: Unsafe\nCategories: Jailbreak", {"toxicity": 1.0}),
    (GuardFormat.granite_guardian, "Yes\n<confidence> High </confidence>", {"toxicity": 1.0}),
    (GuardFormat.granite_guardian, "<think>nothing harmful</think> <score> no </score>", {}),
])
def test_parse_guard_output(fmt: GuardFormat, answer: str, scores: dict[str, float]) -> None:
    assert parse_guard_output(answer, fmt).scores == scores


@pytest.mark.parametrize(("fmt", "answer"), [
    (GuardFormat.llama_guard, "The text is fine."), (GuardFormat.shieldgemma, "Maybe"),
    (GuardFormat.qwen3guard, "Unsafe"), (GuardFormat.granite_guardian, ""),
])
def test_parse_rejects_other_formats(fmt: GuardFormat, answer: str) -> None:
    with pytest.raises(GuardFormatError):
        parse_guard_output(answer, fmt)


# ---- docker-compose profile "guard" -----------------------------------------------------------------

def test_compose_guard_profile_pulls_a_guard_model_into_ollama(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose binary not found on PATH (scripts/setup.sh installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "GUARD_", "OLLAMA_"))}
    proc = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "--profile", "guard", "config"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    pull, bot = services["ollama-pull-guard"], services["bot-guard"]
    assert pull["profiles"] == ["guard"] and bot["profiles"] == ["guard"]
    assert pull["command"] == ["pull", "llama-guard3:1b"]
    assert pull["environment"]["OLLAMA_HOST"] == "ollama:11434"
    assert bot["depends_on"]["ollama-pull-guard"] == {"condition": "service_completed_successfully"}

    from bot.config import load_settings

    for key in list(os.environ):
        if key.startswith("VOICEBOT_"):
            monkeypatch.delenv(key)
    for key, value in bot["environment"].items():
        if key.startswith("VOICEBOT_"):
            monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.moderation.guard_base_url == "http://ollama:11434/v1"
    assert settings.moderation.guard_model == "llama-guard3:1b"
    assert "guard" in settings.moderation.output.backends and "guard" in settings.moderation.input.backends
    assert "classifier" in settings.moderation.output.backends
