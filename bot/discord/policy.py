"""Multi-speaker policy: who is listened to (allow-lists) and how speakers are named.

* :class:`AccessPolicy` — allow-lists of guild, voice channel and user ids (empty = no restriction).
* :class:`SpeakerBook` — a stable label per user for the session: the display name at first sight (kept even
  if they rename; a clash gets `` (2)``), or ``user:<id>``.

Who is answered (``discord.respond_to``) is the attention policy every transport shares
(:class:`bot.attention.gate.AttentionGate`): the same gate as ``[attention]``, placed on the transcript.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LABEL = 64


@dataclass
class AccessPolicy:
    guild_ids: frozenset[int] = field(default_factory=frozenset)
    channel_ids: frozenset[int] = field(default_factory=frozenset)
    user_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, cfg) -> AccessPolicy:
        return cls(frozenset(cfg.guild_ids), frozenset(cfg.channel_ids), frozenset(cfg.user_ids))

    def guild_ok(self, guild_id: int | None) -> bool:
        return guild_id is not None and (not self.guild_ids or guild_id in self.guild_ids)

    def channel_ok(self, channel_id: int | None) -> bool:
        return channel_id is not None and (not self.channel_ids or channel_id in self.channel_ids)

    def user_ok(self, user_id: int | None) -> bool:
        return user_id is not None and (not self.user_ids or user_id in self.user_ids)


class SpeakerBook:
    """user id <-> label, fixed for the session at first sight."""

    def __init__(self, style: str = "name") -> None:
        if style not in ("name", "id"):
            raise ValueError(f"speaker label style must be 'name' or 'id', got {style!r}")
        self.style = style
        self._labels: dict[int, str] = {}
        self._ids: dict[str, int] = {}

    def label(self, user_id: int, display_name: str | None = None) -> str:
        known = self._labels.get(user_id)
        if known is not None:
            return known
        base = f"user:{user_id}"
        if self.style == "name":
            name = " ".join((display_name or "").split())[:MAX_LABEL]
            base = name or base
        label, n = base, 1
        while label in self._ids:
            n += 1
            label = f"{base} ({n})"
        self._labels[user_id] = label
        self._ids[label] = user_id
        return label

    def known(self, user_id: int) -> str | None:
        return self._labels.get(user_id)

    def user_id(self, label: str) -> int | None:
        return self._ids.get(label)

    def items(self) -> list[tuple[int, str]]:
        return list(self._labels.items())
