"""Discord text messages: which ones the bot answers, and the text it reads from them.

The bot answers a message in a channel it serves (the voice channel's own chat, and the notice channel if
one is set) when the message mentions it or replies to one of its messages. The answer goes through the
voice session's :class:`~bot.text_chat.TextConversation` (same persona, LLM, moderation, context and audit
log as the voice turns) and is posted as a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 2000
"""Discord's limit on a message's length."""


@dataclass(frozen=True)
class TextMessage:
    author_id: int
    author_name: str | None
    channel_id: int
    text: str
    """The message without the mentions of the bot."""


def _mention(bot_id: int) -> re.Pattern[str]:
    return re.compile(rf"<@!?{bot_id}>")


def addressed_to(message: Any, bot_id: int) -> bool:
    """The message mentions the bot, or replies to a message of the bot's."""
    if any(getattr(user, "id", None) == bot_id for user in getattr(message, "mentions", None) or []):
        return True
    reference = getattr(message, "reference", None)
    resolved = getattr(reference, "resolved", None) if reference is not None else None
    return getattr(getattr(resolved, "author", None), "id", None) == bot_id


def read_message(message: Any, bot_id: int, channel_ids: set[int]) -> TextMessage | None:
    """The message to answer, or None: from a bot, in a channel not served, not addressed, or empty.

    Without the privileged Message Content intent Discord still sends the text of messages that mention
    the bot; a reply with its mention turned off arrives empty and is not answered (docs/discord.md)."""
    author = getattr(message, "author", None)
    if author is None or getattr(author, "bot", False) or getattr(author, "id", None) == bot_id:
        return None
    channel_id = getattr(getattr(message, "channel", None), "id", None)
    if channel_id not in channel_ids or not addressed_to(message, bot_id):
        return None
    text = " ".join(_mention(bot_id).sub(" ", getattr(message, "content", "") or "").split())
    if not text:
        return None
    return TextMessage(author_id=author.id, author_name=getattr(author, "display_name", None),
                       channel_id=channel_id, text=text)
