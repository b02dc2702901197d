"""Floor control: in a voice channel several people talk, but the pipeline hears one of them at a time.

Rules (docs/discord.md):

* Nobody holds the floor: whoever has unheard speech takes it, earliest start of speech first. That is
  the first person to start talking, or someone who spoke while the floor was taken (a queue of one
  utterance per person, oldest first).
* The holder keeps it while they talk, while their buffered speech is still being fed, while the
  pipeline is busy with their turn (speech being transcribed, a reply pending or playing) and until they
  have been silent for ``release_secs``.
* Only the holder's audio is fed to the pipeline. The speech of the others waits in memory (their current
  or last run of speech, at most ``discord.floor_lookback_secs``) and is fed, faster than real time, when
  they get the floor; older speech is dropped unheard. Nothing of theirs is written anywhere unless it
  is fed, i.e. becomes a turn.
* A holder who leaves the channel (or is forgotten) releases the floor at once.

Pure logic over :class:`~bot.discord.audio.UserStream` activity, so it can be tested without a pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class Activity(Protocol):
    last_voice: float
    spurt_start: float | None
    pending_voice: bool


@dataclass
class FloorChange:
    previous: int | None
    holder: int | None


class FloorControl:
    def __init__(self, *, release_secs: float = 1.0) -> None:
        self.release_secs = release_secs
        self.holder: int | None = None
        self.since: float | None = None

    def update(self, now: float, users: Mapping[int, Activity], busy: bool) -> FloorChange | None:
        """Decide who holds the floor at ``now``; returns the change, if there was one.

        ``busy``: the pipeline is still working on the holder's turn (it keeps the floor however long
        they have been silent)."""
        previous = self.holder
        if self.holder is not None:
            user = users.get(self.holder)
            done = user is None or (now - user.last_voice >= self.release_secs and not user.pending_voice)
            if user is None or (done and not busy):
                self.holder = None
        if self.holder is None:
            waiting = [(u.spurt_start, uid) for uid, u in users.items()
                       if u.spurt_start is not None and u.pending_voice]
            if waiting:
                self.holder = min(waiting)[1]
                self.since = now
        if self.holder != previous:
            return FloorChange(previous, self.holder)
        return None

    def release(self, user_id: int | None = None) -> bool:
        """Take the floor away (from ``user_id`` only, if given). Returns whether it was held."""
        if self.holder is None or (user_id is not None and self.holder != user_id):
            return False
        self.holder = None
        return True
