"""Multi-speaker policy: who is listened to (allow-lists), how speakers are named, who is answered.

* :class:`AccessPolicy` — allow-lists of guild, voice channel and user ids (empty = no restriction).
* :class:`SpeakerBook` — a stable label per user for the session: the display name at first sight (kept even
  if they rename; a clash gets `` (2)``), or ``user:<id>``.
* :func:`is_addressed` — case-insensitive whole-word match of the persona's name or a wake word.
* :class:`ReplyGate` — a transcript processor (``SessionHooks.on_transcript``: after STT, or after the realtime
  service's input transcription). It decides per transcript whether the turn is answered (``respond_to = "all"`` answers everything; ``"addressed"`` only transcripts that name
  the bot). Unanswered transcripts never reach the LLM, but they are still heard: the turn tracker saw
  them leave STT, so they are in the audit log with no reply. The gate tells the input transport about
  every decision with an upstream :class:`ReplyDecisionFrame`, so floor control knows a reply is coming.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipecat.frames.frames import Frame, SystemFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import ends_user_turn

RESPOND_TO = ("all", "addressed")
MAX_LABEL = 64


@dataclass
class ReplyDecisionFrame(SystemFrame):
    """Upstream, from :class:`ReplyGate` to the input transport: a transcript was heard and will
    (``reply=True``) or will not be answered."""

    reply: bool = False
    speaker: str = ""


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


def _name_pattern(name: str) -> re.Pattern[str] | None:
    words = re.findall(r"\w+", name)
    if not words:
        return None
    # Whole words only ("Nova" matches "hey nova," but not "novas" or "supernova"); any spacing or
    # punctuation between the words of a multi-word name ("Captain Reed" ~ "captain, reed").
    return re.compile(r"(?<!\w)" + r"\W+".join(re.escape(w) for w in words) + r"(?!\w)", re.IGNORECASE)


def wake_names(persona) -> list[str]:
    """The names a persona answers to: its name and its wake words."""
    return [n for n in [persona.name, *persona.wake_words] if n and n.strip()]


def is_addressed(text: str, names: Iterable[str]) -> bool:
    for name in names:
        pattern = _name_pattern(name)
        if pattern is not None and pattern.search(text or ""):
            return True
    return False


class ReplyGate(FrameProcessor):
    """Lets through the transcripts the bot should answer. See the module docstring.

    Within one user turn, the first addressed transcript also releases the ones held before it ("what time
    is it ... Nova?"), and later ones pass ("Nova ... what time is it?"). A turn ends at a frame for which
    :func:`bot.frames.ends_user_turn` holds (the user aggregator's ``UserStoppedSpeakingFrame``, the realtime
    service's ``UserTurnTranscribedFrame``, or the floor passing to someone else).
    """

    def __init__(self, respond_to: str, names: Iterable[str], **kwargs) -> None:
        super().__init__(**kwargs)
        if respond_to not in RESPOND_TO:
            raise ValueError(f"respond_to must be one of {', '.join(RESPOND_TO)}, got {respond_to!r}")
        self.respond_to = respond_to
        self.names = [n for n in names if n and n.strip()]
        self._held: list[TranscriptionFrame] = []
        self._addressed = False
        self.passed = 0
        self.dropped = 0

    def _new_turn(self) -> None:
        self.dropped += len(self._held)
        self._held = []
        self._addressed = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._transcript(frame)
            return
        if ends_user_turn(frame):
            self._new_turn()
        await self.push_frame(frame, direction)

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        reply = self.respond_to == "all" or self._addressed or is_addressed(frame.text, self.names)
        if not frame.text.strip():
            reply = False
        await self.push_frame(ReplyDecisionFrame(reply=reply, speaker=frame.user_id), FrameDirection.UPSTREAM)
        if not reply:
            self._held.append(frame)
            return
        self._addressed = True
        for held in self._held:
            await self.push_frame(held, FrameDirection.DOWNSTREAM)
            self.passed += 1
        self._held = []
        await self.push_frame(frame, FrameDirection.DOWNSTREAM)
        self.passed += 1
