"""Who gets the CPU first when the bot runs its models in-process: the voice the user is waiting for.

On a small CPU, Piper synthesizing a reply's first piece and llama.cpp generating the rest of the
reply run at the same time and slow each other down (measured on 2 cores: Piper's time for a
12-word sentence doubles, 167 -> 333 ms). Only the synthesis is on the path to the first sound; the
LLM is 10-20x faster than speech is played, so it can wait. While any synthesis runs, the embedded
LLM's thread pauses between tokens (never longer than ``MAX_WAIT_SECS`` at a time, so a stuck
synthesis cannot starve it).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from collections.abc import Iterator

MAX_WAIT_SECS = 2.0


class SpeechFirst:
    def __init__(self) -> None:
        self._busy = 0
        self._cond = threading.Condition()

    @contextmanager
    def speaking(self) -> Iterator[None]:
        """Held by a TTS service while it synthesizes."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def wait_turn(self, timeout: float = MAX_WAIT_SECS) -> None:
        """Called by text generation between tokens: returns once no synthesis is running."""
        with self._cond:
            self._cond.wait_for(lambda: self._busy == 0, timeout=timeout)


SPEECH_FIRST = SpeechFirst()  # one per process: there is one CPU
