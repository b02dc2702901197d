"""Bounded conversation memory: what the LLM is sent always fits its context window.

Without this, a conversation grows until the prompt no longer fits (``Requested tokens (2066) exceed
context window of 2048``) and every later turn fails: the bot goes silent after ~10 minutes. A
:class:`ContextWindow` keeps the system prompt and the most recent turns within
``llm.n_ctx - llm.max_tokens - margin`` tokens and drops the oldest turns (a user message and what
followed it, so the conversation still starts with the user), reporting exactly what it dropped.

It is provider-independent: every LLM service built by :func:`bot.services.llm.make_llm` (embedded,
openai-compatible, scripted, and any new provider that goes through it) calls :meth:`ContextWindow.fit`
on the conversation before each request. Tokens are counted with the model's own tokenizer where
there is one (llama.cpp), with ``tiktoken`` when it is installed (OpenAI models), else estimated
conservatively at one token per 3 UTF-8 bytes (English averages ~4 characters per token). Each
message also costs :data:`MESSAGE_OVERHEAD` tokens for the chat template's role markers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.errors import VoicebotError

MESSAGE_OVERHEAD = 8
"""Tokens a chat template adds around each message (ChatML: ``<|im_start|>role\\n`` … ``<|im_end|>\\n``)."""

MARGIN = 16
"""Tokens kept free besides the reply, for the template's prompt start and counting slack."""

REFILL = 0.75
"""When the oldest turns must go, enough go to bring the prompt down to this fraction of the budget."""

MIN_TURN_TOKENS = 32
"""A persona's prompt must leave at least this much room for the user's turn."""


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class FunctionCounter:
    """Counts with a tokenizer (e.g. the embedded model's own, :meth:`LlamaChatClient.count_tokens`)."""

    name: str
    counter: Callable[[str], int]

    def count(self, text: str) -> int:
        return self.counter(text) if text else 0


@dataclass(frozen=True)
class EstimateCounter:
    """No tokenizer available: one token per 3 UTF-8 bytes, rounded up (over-counts English, so it is safe)."""

    name: str = "estimate (1 token per 3 bytes)"

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / 3) if text else 0


def openai_counter(model: str) -> TokenCounter:
    """``tiktoken``'s encoding for ``model`` when tiktoken is installed and knows it, else the estimate."""
    try:
        import tiktoken  # optional: not a voicebot dependency
    except ImportError:
        return EstimateCounter()
    try:
        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        return EstimateCounter()
    return FunctionCounter(f"tiktoken {encoding.name}", lambda text: len(encoding.encode(text, disallowed_special=())))


def message_text(message: Any) -> str:
    """The text of a chat message (string content, or the text parts of a list content)."""
    content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def role_of(message: Any) -> str:
    role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
    return role if isinstance(role, str) else "other"


class ContextOverflow(Exception):
    """Even with every earlier turn dropped, the system prompt and this turn do not fit."""


@dataclass
class Trim:
    """What :meth:`ContextWindow.fit` did to one request's conversation."""

    dropped: list[dict[str, Any]] = field(default_factory=list)
    """The dropped messages, oldest first: ``{role, text, tokens}``."""
    indices: list[int] = field(default_factory=list)
    """Their positions in the conversation given to :meth:`ContextWindow.fit`."""
    dropped_tokens: int = 0
    kept_messages: int = 0
    tokens: int = 0
    """Tokens of what is sent (system prompt included), by this window's count."""
    upto: int = 0
    """Messages before this position are left out (pass it as ``keep_from`` to the next :meth:`fit`)."""

    def audit(self, window: ContextWindow, since: int = 0) -> dict[str, Any]:
        """The ``llm.context_trimmed`` record's data (see docs/audit-log.md): the messages newly left out
        (conversation positions ``>= since``; earlier ones were reported before) and the request's size."""
        new = [d for d, i in zip(self.dropped, self.indices) if i >= since]
        return {"dropped_messages": len(new), "dropped_tokens": sum(d["tokens"] for d in new), "dropped": new,
                "left_out_messages": len(self.dropped), "kept_messages": self.kept_messages,
                "context_tokens": self.tokens, "budget_tokens": window.budget, "n_ctx": window.n_ctx,
                "counter": window.counter.name}


@dataclass
class ContextWindow:
    n_ctx: int
    reply_tokens: int
    counter: TokenCounter
    system: str = ""
    """The system prompt sent with every request (pipecat adds it; it is not in the context's messages)."""

    @property
    def budget(self) -> int:
        """Tokens the prompt (system + conversation) may use: the window minus the reply and a margin."""
        return self.n_ctx - self.reply_tokens - MARGIN

    def tokens(self, message: Any) -> int:
        return self.counter.count(message_text(message)) + MESSAGE_OVERHEAD

    def system_tokens(self) -> int:
        return self.counter.count(self.system) + MESSAGE_OVERHEAD if self.system else 0

    def check_prompt(self, source: str = "the persona") -> None:
        """Refuse at start a system prompt that leaves no room for a turn, naming the field and the limit."""
        need = self.system_tokens()
        room = self.budget - MIN_TURN_TOKENS
        if need > room:
            raise VoicebotError(
                f"{source}'s system_prompt (with its style) is {need} tokens ({self.counter.name}) but only {room} fit: "
                f"llm.n_ctx = {self.n_ctx} minus llm.max_tokens = {self.reply_tokens} for the reply and "
                f"{MARGIN + MIN_TURN_TOKENS} for the turn: shorten system_prompt/style or raise llm.n_ctx "
                "(to what the model supports)")

    def fit(self, messages: list[Any], keep_from: int = 0) -> tuple[list[Any], Trim]:
        """``messages`` cut to the window: system messages and the latest turn are kept, the oldest turns
        dropped (a dropped user message takes the replies after it, up to the next user message).

        ``keep_from``: messages before this position were left out of an earlier request and stay out, so
        the start of the prompt stays the same from one request to the next (llama.cpp and hosted APIs
        reuse the evaluated prefix). When more must go, the cut goes down to :data:`REFILL` of the budget,
        so it moves once every few turns rather than on every turn. :attr:`Trim.upto` is the new position.
        Raises :class:`ContextOverflow` when the latest turn alone does not fit."""
        sizes = [self.tokens(m) for m in messages]
        total = self.system_tokens() + sum(sizes)
        trim = Trim()
        last_user = max((i for i, m in enumerate(messages) if role_of(m) == "user"), default=len(messages) - 1)
        # The current turn is the last user message and everything after it, plus user messages right before it.
        turn_start = last_user
        while turn_start > 0 and role_of(messages[turn_start - 1]) == "user":
            turn_start -= 1
        keep = [True] * len(messages)

        def drop_until(limit: float, i: int) -> int:
            nonlocal total
            while (total > limit or i < min(keep_from, turn_start)) and i < turn_start:
                if role_of(messages[i]) in ("system", "developer"):
                    i += 1
                    continue
                # drop message i and the non-user messages that answered it
                j = i + 1
                while j < turn_start and role_of(messages[j]) not in ("user", "system", "developer"):
                    j += 1
                for k in range(i, j):
                    keep[k] = False
                    total -= sizes[k]
                    trim.dropped.append({"role": role_of(messages[k]), "text": message_text(messages[k]),
                                         "tokens": sizes[k]})
                    trim.indices.append(k)
                    trim.dropped_tokens += sizes[k]
                i = j
            return i

        i = drop_until(self.budget, 0)  # what was left out before stays out; then only if it does not fit
        if total > self.budget or (trim.indices and trim.indices[-1] >= keep_from):
            i = drop_until(self.budget * REFILL, i)
        if total > self.budget:
            raise ContextOverflow(
                f"this turn does not fit the LLM's context window: {total} tokens with the system prompt, "
                f"{self.budget} allowed (llm.n_ctx = {self.n_ctx}, llm.max_tokens = {self.reply_tokens})")
        kept = [m for m, k in zip(messages, keep) if k]
        trim.kept_messages, trim.tokens = len(kept), total
        trim.upto = max(keep_from, trim.indices[-1] + 1 if trim.indices else 0)
        return kept, trim
