"""Speaking up unprompted: the cue detectors on the raw input audio, and the alert they make the bot say.

:class:`CueListener` sits on the input audio (``SessionHooks.on_audio``: after the echo policy, beside the
VAD). When a detector recognises a cue it

1. waits while the user is speaking (an alert never talks over the user; it goes out once they stop),
2. skips it if the same cue was announced less than ``attention.cue_repeat_secs`` ago, or was acknowledged
   ("thanks, I know": :class:`~bot.attention.gate.AttentionGate` mutes it),
3. checks the persona's line for that cue with output moderation (fail-closed: a line that does not pass,
   or a check that fails, is not said and the decision says so),
4. pushes a :class:`CueAlertFrame` (the turn tracker opens a bot-initiated turn for it and the audit log gets
   an ``attention.cue`` record with the cue, its onset and when it was recognised) and the line as a
   ``TTSSpeakFrame``, which the mode's TTS speaks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.attention.cues import RATE, CueDetector, CueEvent, CueName
from bot.audio import pcm_to_float
from bot.attention.gate import AttentionState
from bot.frames import CueAlertFrame

DEFAULT_LINES: dict[CueName, str] = {
    "smoke-alarm": "I can hear a smoke alarm. Please check for fire and get out if you need to.",
    "co-alarm": "I can hear a carbon monoxide alarm. Open a window, get outside, and call for help.",
}


Check = Callable[[str], Awaitable[bool]]
"""Output moderation of the alert line: True when it may be said."""


class CueListener(FrameProcessor):
    def __init__(self, cues: list[CueName], lines: dict[str, str], *, check: Check, state: AttentionState,
                 repeat_secs: float = 30.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.detector = CueDetector(cues)
        self.lines = {c: lines.get(c) or DEFAULT_LINES[c] for c in cues}
        self.check = check
        self.state = state
        self.repeat_secs = repeat_secs
        self._user_speaking = False
        self._pending: list[CueEvent] = []
        self._t = 0.0
        self.alerts: list[CueAlertFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, (VADUserStartedSpeakingFrame, UserStartedSpeakingFrame)):
            self._user_speaking = True
        elif isinstance(frame, (VADUserStoppedSpeakingFrame, UserStoppedSpeakingFrame)):
            self._user_speaking = False
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._audio(frame)

    async def _audio(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != RATE:
            return  # the pipeline hears at 16 kHz (transport.sample_rate); nothing else reaches here
        samples = pcm_to_float(frame.audio, frame.num_channels)
        self._pending += self.detector.feed(samples)
        self._t += len(samples) / RATE
        if self._pending and not self._user_speaking:
            events, self._pending = self._pending, []
            for event in events:
                await self._announce(event)

    async def _announce(self, event: CueEvent) -> None:
        now = time.monotonic()
        last = self.state.last_cue_alert
        if self.state.cue_muted(event.cue, now):
            return await self._skip(event, "acknowledged by the user")
        if last is not None and self.state.last_cue == event.cue and now - last < self.repeat_secs:
            return  # the same alarm keeps sounding: one alert per repeat_secs, not one per cycle
        text = self.lines[event.cue]
        try:
            allowed = await self.check(text)
        except Exception as exc:  # noqa: BLE001 - fail closed: an unchecked line is not said
            return await self._skip(event, f"output moderation failed ({type(exc).__name__}): not said", text)
        if not allowed:
            return await self._skip(event, "output moderation blocked the line", text)
        self.state.last_cue_alert, self.state.last_cue = now, event.cue
        alert = CueAlertFrame(cue=event.cue, text=text, onset_s=round(event.onset, 3),
                              detected_s=round(event.t, 3))
        self.alerts.append(alert)
        await self.push_frame(alert)
        await self.push_frame(TTSSpeakFrame(text))

    async def _skip(self, event: CueEvent, why: str, text: str = "") -> None:
        alert = CueAlertFrame(cue=event.cue, text=text, onset_s=round(event.onset, 3), detected_s=round(event.t, 3),
                              spoken=False, why=why)
        self.alerts.append(alert)
        await self.push_frame(alert)
