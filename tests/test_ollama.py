"""llm.provider = "ollama": the native API through the ``ollama`` package, against a local stand-in server
(tests/fake_ollama.py) that speaks /api/chat, /api/tags and /api/show and validates with the package's types."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from bot.errors import VoicebotError
from bot.persona import load_persona
from bot.services.ollama import OllamaChatClient, check_ollama
from conftest import REPO
from fake_ollama import FakeModel, FakeOllama

MODEL = "qwen2.5:0.5b"


@pytest.fixture(scope="module")
def server():
    with FakeOllama([FakeModel(MODEL, replies=["Paris is the capital of France. It sits on the Seine."]),
                     FakeModel("llama3.2:latest"),
                     FakeModel("nomic-embed-text:latest", capabilities=["embedding"])]) as fake:
        yield fake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_accepts_a_pulled_chat_model(server, settings_factory):
    check_ollama(settings_factory(**{"llm.provider": "ollama", "llm.model": MODEL, "llm.base_url": server.url}).llm)
    # ":latest" is implied, as in `ollama run llama3.2`
    check_ollama(settings_factory(**{"llm.provider": "ollama", "llm.model": "llama3.2",
                                     "llm.base_url": server.url}).llm)
    assert ("/api/show", {"model": "llama3.2"}) in server.requests


@pytest.mark.parametrize("overrides, message", [
    ({"llm.model": "mistral"}, r"model 'mistral' is not pulled on the Ollama server .*: run `ollama pull mistral`"),
    ({"llm.model": "nomic-embed-text"}, r"cannot chat \(capabilities: embedding\)"),
    ({"llm.model": ""}, r"llm.model is empty"),
    ({"llm.model": MODEL, "llm.options": {"num_ctxx": 4096}}, r"llm.options has 'num_ctxx'"),
    ({"llm.model": MODEL, "llm.options": {"num_ctx": 4096}}, r"llm.options.num_ctx: set llm.n_ctx instead"),
])
def test_preflight_fails_in_one_line(server, settings_factory, overrides, message):
    s = settings_factory(**{"llm.provider": "ollama", "llm.base_url": server.url, **overrides})
    with pytest.raises(VoicebotError, match=message) as info:
        check_ollama(s.llm)
    assert "\n" not in str(info.value)


def test_preflight_says_when_the_server_is_down(settings_factory):
    s = settings_factory(**{"llm.provider": "ollama", "llm.model": MODEL,
                            "llm.base_url": f"http://127.0.0.1:{_free_port()}"})
    with pytest.raises(VoicebotError, match=r"Ollama server http://127.0.0.1:\d+ is unreachable: start it "
                                            r"\(`ollama serve`\)"):
        check_ollama(s.llm)


def test_cli_stops_in_one_line_when_the_model_is_missing(server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "run", "-i", str(tmp_path / "q.wav"),
                             "--set", "llm.provider=ollama", "--set", "llm.model=mistral",
                             "--set", f"llm.base_url={server.url}", "--set", f"audit.dir={tmp_path / 'audits'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: model 'mistral' is not pulled on the Ollama server {server.url}: run `ollama pull mistral`"]
    assert not (tmp_path / "audits").exists()  # stopped before the session started


def test_chat_streams_with_keep_alive_and_options(server, settings_factory):
    s = settings_factory(**{"llm.provider": "ollama", "llm.model": MODEL, "llm.base_url": server.url,
                            "llm.keep_alive": "-1", "llm.options": {"top_k": 20}, "llm.n_ctx": 4096,
                            "llm.temperature": 0.2, "llm.max_tokens": 50})
    client = OllamaChatClient(s.llm)
    before = len(server.chats())

    async def ask() -> list:
        stream = await client.chat.completions.create(
            model=MODEL, stream=True, max_tokens=50, temperature=0.2,
            messages=[{"role": "system", "content": "You are Nova."},
                      {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}])
        return [chunk async for chunk in stream]

    chunks = asyncio.run(ask())
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Paris is the capital of France. It sits on the Seine."
    assert len(chunks) > 3, "the answer must arrive streamed, not in one piece"
    assert chunks[-1].choices[0].finish_reason == "stop"

    (request,) = server.chats()[before:]
    assert request.stream is True and request.keep_alive == -1
    assert request.options == {"temperature": 0.2, "num_predict": 50, "num_ctx": 4096, "top_k": 20}
    assert [(m["role"], m["content"]) for m in request.messages] == [
        ("system", "You are Nova."), ("user", "What is the capital of France?")]


def test_a_spoken_question_is_answered_by_ollama(server, make_speech, settings_factory, tmp_path):
    """Switched by config alone: the cascade's LLM is the Ollama server; its streamed answer is spoken."""
    from bot.audit import verify
    from bot.session import run_file

    q = make_speech([(0.4, "What is the capital of France?")], rate=16000)
    s = settings_factory(**{"llm.provider": "ollama", "llm.model": MODEL, "llm.base_url": server.url})
    before = len(server.chats())
    result = asyncio.run(run_file(s, load_persona("default"), q, tmp_path / "reply.wav"))

    assert result.errors == []
    (turn,) = result.turns
    assert turn.spoken_text == "Paris is the capital of France. It sits on the Seine."
    assert result.models["llm"] == f"ollama: {MODEL} at {server.url}"
    request = server.chats()[-1]
    assert len(server.chats()) > before
    assert request.messages[0]["role"] == "system" and "Nova" in request.messages[0]["content"]
    assert request.messages[-1]["role"] == "user" and "capital" in request.messages[-1]["content"].lower()
    assert request.keep_alive == "30m"
    assert verify(result.audit_dir).ok
