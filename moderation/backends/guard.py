"""``guard`` backend: an open guard model behind any OpenAI-compatible chat endpoint.

Works with Ollama (``http://localhost:11434/v1``), vLLM, llama.cpp's server or any server speaking
``POST /v1/chat/completions``. The server's chat template wraps the conversation in the guard model's own
prompt and classifies its *last* message, so the shape says whose text it is (:func:`guard_messages`): a
user's text is one user message (prompt classification); a bot reply is an assistant message after a user
turn (response classification: Llama Guard 3 then judges the "Agent", ShieldGemma the "Chatbot Response",
Qwen3Guard-Gen and Granite Guardian the assistant turn, each under its response policy). The user turn is
empty: the check is per sentence and does not carry the prompt. ``temperature = 0``, a short
``max_tokens``, no retries, client timeout = ``moderation.timeout_ms``. Each model family answers in its own format, parsed by
:func:`parse_guard_output` and mapped onto voicebot's categories:

* **Llama Guard 3** (1B/8B; ``llama-guard3`` in Ollama): ``safe`` or ``unsafe`` + a line of hazard
  codes (``S1,S10``). S1 violent crimes -> violence, S2 non-violent crimes -> illicit, S3 sex-related
  crimes -> sexual, S4 child sexual exploitation -> sexual_minors, S5 defamation -> harassment,
  S6 specialized advice -> illicit, S7 privacy -> harassment, S8 intellectual property -> illicit,
  S9 indiscriminate weapons -> violence, S10 hate -> hate, S11 suicide & self-harm -> self_harm,
  S12 sexual content -> sexual, S13 elections -> illicit, S14 code interpreter abuse -> illicit.
* **ShieldGemma** (``shieldgemma``): ``Yes`` (violates the policy) / ``No``. No category: ``toxicity``.
* **Qwen3Guard-Gen**: ``Safety: Safe|Unsafe|Controversial`` + ``Categories: ...``. Unsafe scores 1.0,
  Controversial 0.6 (blocked at the default thresholds = Qwen's "strict" reading; set a threshold
  above 0.6 for the "loose" one). Violent -> violence, Non-violent Illegal Acts -> illicit,
  Sexual Content or Sexual Acts -> sexual, PII -> harassment, Suicide & Self-Harm -> self_harm,
  Unethical Acts / Politically Sensitive Topics / Jailbreak -> toxicity, Copyright Violation -> illicit.
* **Granite Guardian** (``granite3-guardian``, ``granite3.3-guardian``): ``Yes``/``No`` (3.0-3.2, maybe
  with ``<confidence> High </confidence>``) or ``<score> yes </score>`` (3.3, maybe after
  ``<think>...</think>``). Category ``toxicity``.

An answer that fits none of these raises :class:`GuardFormatError`, so the check fails closed
and the verdict shows what the model said. The model family comes from ``moderation.guard_format``
or, with ``auto``, from the model name.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from moderation.base import Backend, BackendUnavailable, Scores

__all__ = ["GuardBackend", "GuardFormat", "GuardFormatError", "GuardVerdict", "parse_guard_output",
           "detect_format", "guard_messages", "LLAMA_GUARD_CATEGORIES", "QWEN3GUARD_CATEGORIES"]


class GuardFormat(str, Enum):
    """The output formats of the supported guard model families."""

    auto = "auto"
    llama_guard = "llama_guard"
    shieldgemma = "shieldgemma"
    qwen3guard = "qwen3guard"
    granite_guardian = "granite_guardian"


class GuardFormatError(ValueError):
    """The guard model's answer is not in the format of its family."""


LLAMA_GUARD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "S1": ("violence",), "S2": ("illicit",), "S3": ("sexual",), "S4": ("sexual_minors",),
    "S5": ("harassment",), "S6": ("illicit",), "S7": ("harassment",), "S8": ("illicit",),
    "S9": ("violence",), "S10": ("hate",), "S11": ("self_harm",), "S12": ("sexual",),
    "S13": ("illicit",), "S14": ("illicit",),
}

QWEN3GUARD_CATEGORIES: dict[str, tuple[str, ...]] = {
    "violent": ("violence",), "non-violent illegal acts": ("illicit",),
    "sexual content or sexual acts": ("sexual",), "pii": ("harassment",),
    "suicide & self-harm": ("self_harm",), "unethical acts": ("toxicity",),
    "politically sensitive topics": ("toxicity",), "copyright violation": ("illicit",),
    "jailbreak": ("toxicity",),
}


@dataclass
class GuardVerdict:
    """What a guard model said, parsed: per-category scores (empty = safe) and the raw labels."""

    scores: dict[str, float] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    unsafe: bool = False


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_llama_guard(text: str) -> GuardVerdict:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        raise GuardFormatError(f"expected 'safe' or 'unsafe' from Llama Guard, got {_excerpt(text)!r}")
    if lines[0].lower() == "safe":
        return GuardVerdict()
    codes = re.findall(r"S\d+", " ".join(lines[1:]).upper())
    scores: dict[str, float] = {}
    for code in codes:
        for cat in LLAMA_GUARD_CATEGORIES.get(code, ("toxicity",)):
            scores[cat] = 1.0
    return GuardVerdict(scores or {"toxicity": 1.0}, codes, True)


def _yes_no(text: str, family: str) -> bool:
    word = re.match(r"\s*\**\s*(yes|no)\b", text, re.I)
    if word is None:
        raise GuardFormatError(f"expected 'Yes' or 'No' from {family}, got {_excerpt(text)!r}")
    return word.group(1).lower() == "yes"


def _parse_shieldgemma(text: str) -> GuardVerdict:
    unsafe = _yes_no(text, "ShieldGemma")
    return GuardVerdict({"toxicity": 1.0} if unsafe else {}, ["Yes" if unsafe else "No"], unsafe)


def _parse_qwen3guard(text: str) -> GuardVerdict:
    level = re.search(r"Safety:\s*(Safe|Unsafe|Controversial)", text, re.I)
    if level is None:
        raise GuardFormatError(f"expected 'Safety: Safe|Unsafe|Controversial' from Qwen3Guard, got {_excerpt(text)!r}")
    severity = level.group(1).capitalize()
    if severity == "Safe":
        return GuardVerdict(labels=["Safe"])
    score = 1.0 if severity == "Unsafe" else 0.6
    cats_line = re.search(r"Categories:\s*(.+)", text, re.I)
    names = [c.strip() for c in re.split(r"[,\n]", cats_line.group(1)) if c.strip()] if cats_line else []
    scores: dict[str, float] = {}
    for name in names:
        if name.lower() == "none":
            continue
        for cat in QWEN3GUARD_CATEGORIES.get(name.lower(), ("toxicity",)):
            scores[cat] = max(score, scores.get(cat, 0.0))
    return GuardVerdict(scores or {"toxicity": score}, [severity, *names], True)


def _parse_granite(text: str) -> GuardVerdict:
    body = re.sub(r"<think>.*?</think>", "", text, flags=re.S | re.I)
    score_tag = re.search(r"<score>\s*(yes|no)\s*</score>", body, re.I)
    if score_tag is not None:
        unsafe = score_tag.group(1).lower() == "yes"
    else:
        unsafe = _yes_no(body, "Granite Guardian")
    confidence = re.search(r"<confidence>\s*(\w+)\s*</confidence>", body, re.I)
    labels = ["Yes" if unsafe else "No"] + ([f"confidence {confidence.group(1)}"] if confidence else [])
    return GuardVerdict({"toxicity": 1.0} if unsafe else {}, labels, unsafe)


_PARSERS = {
    GuardFormat.llama_guard: _parse_llama_guard,
    GuardFormat.shieldgemma: _parse_shieldgemma,
    GuardFormat.qwen3guard: _parse_qwen3guard,
    GuardFormat.granite_guardian: _parse_granite,
}


def parse_guard_output(text: str, fmt: GuardFormat) -> GuardVerdict:
    """Parse one answer of a guard model of family ``fmt``; raises :class:`GuardFormatError`."""
    if fmt is GuardFormat.auto:
        raise ValueError("resolve the format first (detect_format)")
    return _PARSERS[fmt](text or "")


def detect_format(model: str) -> GuardFormat:
    """The family of a guard model from its name (Ollama tag or Hugging Face id)."""
    name = model.lower().replace("_", "-")
    if "llama-guard" in name or "llamaguard" in name:
        return GuardFormat.llama_guard
    if "shieldgemma" in name or "shield-gemma" in name:
        return GuardFormat.shieldgemma
    if "qwen3guard" in name or "qwen3-guard" in name:
        return GuardFormat.qwen3guard
    if "granite" in name and "guardian" in name:
        return GuardFormat.granite_guardian
    raise BackendUnavailable(
        f"cannot tell the output format of guard model {model!r} from its name: set moderation.guard_format "
        "to llama_guard, shieldgemma, qwen3guard or granite_guardian")


def guard_messages(text: str, role: str) -> list[dict[str, str]]:
    """The conversation that asks a guard model about ``text`` said by ``role`` (``"user"`` or ``"bot"``).

    Every supported family's chat template classifies the last message and tells a prompt from a response
    by its role: Llama Guard 3 (``User`` vs ``Agent`` in its prompt; roles must alternate from ``user``),
    ShieldGemma (``Human Question`` vs ``Chatbot Response``, only when an assistant message is last),
    Qwen3Guard-Gen and Granite Guardian (``[user, assistant]`` for response moderation). So a reply is an
    assistant message after a user turn; the user turn is empty, as the prompt is not part of the check."""
    if role == "bot":
        return [{"role": "user", "content": ""}, {"role": "assistant", "content": text}]
    return [{"role": "user", "content": text}]


def _warm_openai_types() -> None:
    """Build the client and response types once at load, so a first check does not pay for it."""
    from openai import AsyncOpenAI, OpenAI  # noqa: F401 - AsyncOpenAI: import its module now
    from openai.types.chat import ChatCompletion

    # The SDK imports its resources lazily, on first access; the sync and async resources share the modules.
    # A sync client can be closed here (this runs in a worker thread, with no event loop to close an async one).
    with OpenAI(api_key="none", base_url="http://127.0.0.1:9/v1", max_retries=0) as client:
        _ = client.chat.completions.create
    ChatCompletion.model_validate({
        "id": "warmup", "object": "chat.completion", "created": 0, "model": "warmup",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "safe"}}]})


class GuardBackend(Backend):
    """Asks a guard model; one ``AsyncOpenAI`` client per event loop."""

    name = "guard"

    def __init__(self, model: str, base_url: str, fmt: GuardFormat = GuardFormat.auto,
                 api_key_env: str = "", timeout_ms: float = 500, max_tokens: int = 32) -> None:
        super().__init__()
        self.model = model
        self.base_url = base_url
        self.requested_format = GuardFormat(fmt)
        self.format = self.requested_format
        self.api_key_env = api_key_env
        self.timeout_s = max(timeout_ms, 1.0) / 1000.0
        self.max_tokens = max_tokens
        self._api_key = "none"  # Ollama, vLLM and llama.cpp accept any key unless configured otherwise
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _load(self) -> None:
        try:
            import openai  # noqa: F401 - checked here so the error is clear
        except ImportError as exc:
            raise BackendUnavailable(f"the openai package is not installed ({exc}): pip install openai") from None
        if not self.model:
            raise BackendUnavailable("the guard backend needs moderation.guard_model (e.g. llama-guard3:1b)")
        _warm_openai_types()
        self.format = detect_format(self.model) if self.requested_format is GuardFormat.auto else self.requested_format
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise BackendUnavailable(
                    f"the guard server needs an API key in the environment variable {self.api_key_env} "
                    "(name set by moderation.guard_api_key_env; leave that empty for servers without keys)")
            self._api_key = key

    def _client(self) -> Any:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s)
            self._clients[loop] = client
        return client

    async def score(self, text: str, role: str, persona: Any) -> Scores:
        try:
            response = await self._client().chat.completions.create(
                model=self.model, messages=guard_messages(text, role),
                temperature=0, max_tokens=self.max_tokens)
        except Exception as exc:  # noqa: BLE001 - re-raised as one line, key never included
            message = str(exc).replace(self._api_key, "***") if self._api_key != "none" else str(exc)
            raise RuntimeError(f"guard server {self.base_url} failed: {type(exc).__name__}: "
                               f"{_excerpt(message)}") from None
        if not response.choices:
            raise GuardFormatError("guard server answered with no choices")
        answer = response.choices[0].message.content or ""
        verdict = parse_guard_output(answer, self.format)
        return Scores(verdict.scores, {"model": self.model, "format": self.format.value,
                                       "answer": _excerpt(answer), "labels": verdict.labels})
