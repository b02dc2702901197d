"""One persona across text and voice: `voicebot chat` and text turns sharing a session's context and audit log.

`voicebot chat` runs as a user types it (a subprocess fed through stdin); moderation is the default stack
(profanity + keywords), the LLM scripted so replies are exact.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from pipecat.processors.aggregators.llm_context import LLMContext

from bot.audit import read_session, verify
from bot.persona import load_persona
from bot.text_chat import TextConversation
from bot.turns import AnchoredClock, TurnTracker
from conftest import REPO

REFUSAL = load_persona("default").refusal


def voicebot(*args: str, stdin: str = "", cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_chat_in_the_terminal_is_moderated_and_audited_as_text_turns(tmp_path):
    audits = tmp_path / "audits"
    script = ["Hello, I am Nova. How can I help?",
              "Paris is the capital. You are a stupid worthless idiot. Bye now."]
    result = voicebot("chat", "--set", "llm.provider=scripted", "--set", f"llm.script={json.dumps(script)}",
                      "--set", f"audit.dir={audits}",
                      stdin="Hi there\n\nWhat is the capital of France?\nYou are a stupid idiot.\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Nova: Hello, I am Nova. How can I help?",
        f"Nova: Paris is the capital. {REFUSAL}",  # the blocked sentence and the rest were never posted
        f"Nova: {REFUSAL}",  # the user's insult was refused before the LLM saw it
    ]
    assert "stupid" not in result.stdout.replace("You are a stupid idiot.", "")

    (session_dir,) = audits.iterdir()
    assert verify(session_dir).ok
    log = read_session(session_dir)
    assert log.header["interface"] == "text chat"
    records = [t.summary for t in log.turns]
    assert [r["turn"] for r in records] == [1, 2, 3]
    assert {r["modality"] for r in records} == {"text"}
    assert records[1]["generated"] == ["Paris is the capital.", "You are a stupid worthless idiot.", "Bye now."]
    assert [v["allowed"] for v in records[1]["output_verdicts"]] == [True, False]
    assert records[1]["refused"] and records[1]["spoken"] == f"Paris is the capital. {REFUSAL}"
    assert records[2]["input_verdict"]["allowed"] is False and records[2]["generated"] == []
    assert log.end["reason"] == "user quit"

    shown = voicebot("audit", "show", str(session_dir))
    assert shown.returncode == 0, shown.stderr
    assert "Turn 1 · user · text" in shown.stdout
    assert 'typed      "What is the capital of France?"' in shown.stdout
    assert f'posted     "Paris is the capital. {REFUSAL}"' in shown.stdout


def test_chat_fails_in_one_line_on_a_bad_llm_setting(tmp_path):
    result = voicebot("chat", "--set", "llm.provider=scripted", "--set", f"audit.dir={tmp_path}", stdin="hi\n")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: llm.provider is 'scripted' but llm.script "
                                                             "is empty")
    assert "Traceback" not in result.stderr


def test_text_turns_share_the_context_and_numbering_of_a_voice_session(settings_factory):
    """A text turn sees what was said by voice before it, and is numbered after the voice turns."""
    s = settings_factory(**{"llm.provider": "scripted", "llm.script": ["Text answer one."]})
    tracker = TurnTracker(AnchoredClock(), lambda: None, vad_start_secs=0.2, vad_stop_secs=0.2)
    tracker._turn_count = 2  # two voice turns already happened in this session
    context = LLMContext()
    context.add_message({"role": "user", "content": "My name is Alice."})  # said by voice
    context.add_message({"role": "assistant", "content": "Nice to meet you, Alice."})
    finished = []
    tracker.turn_listeners.append(finished.append)
    conversation = TextConversation(s, load_persona("pirate"), context, tracker)

    reply = asyncio.run(conversation.ask("What is my name?", speaker="Bob"))

    assert reply.text == "Text answer one." and not reply.refused
    (sent,) = conversation.chat.client.calls
    assert sent[0]["role"] == "system" and "Captain Reed" in sent[0]["content"]  # the persona's own prompt
    assert [m["content"] for m in sent[1:]] == ["My name is Alice.", "Nice to meet you, Alice.", "What is my name?"]
    assert context.get_messages()[-2:] == [{"role": "user", "content": "What is my name?"},
                                           {"role": "assistant", "content": "Text answer one."}]
    (turn,) = finished
    assert (turn.index, turn.speaker, turn.modality) == (3, "Bob", "text")
    assert turn.summary()["user"]["transcript"] == "What is my name?"
