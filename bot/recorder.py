"""Keeps the audio of the turns in flight: what the input transport heard and what the output played.

A pipecat observer, so it works the same for every transport (file, microphone, Discord): it takes the
input audio frames the input transport pushes and the audio frames the output transport pushes after
writing them to the device. Audio older than the oldest open turn is dropped.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport

from bot.audio import pcm_to_int16
from bot.turns import TurnTracker

KEEP_SECS = 600.0
"""Never keep more than this much audio per direction, whatever the turns do."""


class _Track:
    def __init__(self) -> None:
        self.chunks: deque[tuple[float, np.ndarray]] = deque()
        self.rate = 0

    def add(self, t: float, audio: bytes, rate: int, channels: int) -> None:
        samples = pcm_to_int16(audio, channels)
        self.rate = rate
        self.chunks.append((t, samples))
        while self.chunks and t - self.chunks[0][0] > KEEP_SECS:
            self.chunks.popleft()

    def slice(self, start: float, end: float) -> np.ndarray:
        parts = [s for t, s in self.chunks if t + len(s) / max(self.rate, 1) > start and t < end]
        return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")

    def drop_before(self, t: float) -> None:
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) / max(self.rate, 1) < t:
            self.chunks.popleft()


class AudioRecorder(BaseObserver):
    def __init__(self, tracker: TurnTracker) -> None:
        super().__init__()
        self._tracker = tracker
        self.heard = _Track()
        self.played = _Track()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, InputAudioRawFrame) and isinstance(data.source, BaseInputTransport):
            if data.first_push:
                # Input frames are pushed when they arrive, so the push time is when they ended.
                t = self._tracker.session_time(data) - len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
                self.heard.add(t, frame.audio, frame.sample_rate, frame.num_channels)
        elif isinstance(frame, OutputAudioRawFrame) and isinstance(data.source, BaseOutputTransport):
            # The output transport pushes a frame on after the device took it: it is being played now.
            self.played.add(self._tracker.session_time(data), frame.audio, frame.sample_rate, frame.num_channels)

    def user_audio(self, start: float, end: float) -> tuple[np.ndarray, int]:
        return self.heard.slice(start, end), self.heard.rate or 16000

    def take_played(self) -> tuple[np.ndarray, int]:
        """Everything played since the last call: the bot audio of the turn that just finished."""
        parts = [s for _, s in self.played.chunks]
        self.played.chunks.clear()
        return (np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")), self.played.rate or 24000

    def forget_heard_before(self, t: float) -> None:
        self.heard.drop_before(t)
