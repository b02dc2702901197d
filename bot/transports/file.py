"""File transport: a WAV/FLAC/OGG file plays the microphone, a WAV file records the speaker.

Input is fed in 20 ms blocks at real-time pace, exactly as a sound card would deliver it, followed by
silence for as long as the session runs (a live microphone doesn't stop either). Output is written
the way a sound card plays: each block lands on the same timeline as the input at the moment it is
played, and writing blocks for as long as the audio lasts. ``reply.wav`` therefore lines up with
``question.wav``: the gap between the end of the question and the start of the answer is the
latency a user would hear.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, StartFrame
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bot.audio import as_mono_float, int16_to_float, pcm_to_int16, to_pcm
from bot.errors import VoicebotError
from bot.transports.paced import BLOCK_SECS, PacedInputTransport

DEVICE_BUFFER_SECS = 0.04
"""How far ahead of the playback position the virtual speaker accepts audio (like a device buffer)."""


_WAV_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _declared_frames(f: sf.SoundFile) -> int:
    """Frames the file says it has. libsndfile clamps a truncated WAV's length to what is there, but its
    header log keeps the size the header declared (``data : 96000 (should be 47978)``)."""
    match = _WAV_DATA.search(f.extra_info or "")
    if match is None:
        return f.frames
    frame_bytes = f.channels * {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                                "PCM_U8": 1, "PCM_S8": 1}.get(f.subtype, 2)
    return max(f.frames, int(match.group(1)) // frame_bytes)


def load_audio(path: str | Path, sample_rate: int, *, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Read any WAV/FLAC/OGG file as mono float32 at ``sample_rate``, or raise a one-line VoicebotError.

    A truncated or damaged file is answered from the part that could be read, and ``warn`` (default: the
    log) is told how much that was. Non-finite samples (NaN, inf) are an error, not numpy warnings."""
    path = Path(path)
    if not path.is_file():
        raise VoicebotError(f"input audio {path} not found: give an existing WAV, FLAC or OGG file")
    blocks: list[np.ndarray] = []
    broken = ""
    try:
        with sf.SoundFile(str(path)) as f:
            rate, declared = f.samplerate, _declared_frames(f)
            try:
                while True:
                    block = f.read(max(rate // 4, 1), dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    blocks.append(block)
            except (sf.LibsndfileError, RuntimeError) as exc:
                broken = str(exc).split(":")[-1].strip() or "unreadable"
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = str(exc).split(":")[-1].strip() or "unreadable"
        raise VoicebotError(f"cannot read audio file {path} ({reason}): give a WAV, FLAC or OGG file") from None
    data = np.concatenate(blocks) if blocks else np.zeros((0, 1), dtype=np.float32)
    if data.size == 0:
        if broken:
            raise VoicebotError(f"cannot read audio file {path} ({broken}): give a WAV, FLAC or OGG file")
        raise VoicebotError(f"audio file {path} is empty: record a question first")
    bad = ~np.isfinite(data)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise VoicebotError(f"audio file {path} is corrupt: {int(bad.sum())} samples are not numbers (NaN or "
                            f"infinite), the first at {first / rate:.3f} s: re-export or re-record it")
    if broken or len(data) < declared:
        message = (f"audio file {path} is truncated or damaged ({broken or 'shorter than its header says'}): "
                   f"answering the {len(data) / rate:.2f} s that could be read of {max(declared, len(data)) / rate:.2f} s")
        (warn or logger.warning)(message)
    return as_mono_float(data, rate, sample_rate)


class SessionClock:
    """Seconds since the input started: the one timeline input, output and timings share."""

    def __init__(self, speed: float = 1.0) -> None:
        self._t0: float | None = None
        self.speed = speed
        """Session seconds per wall-clock second: 1 in every session; more only in benchmarks/soak.py, which
        plays an hour of input in minutes (the paced input and the virtual speaker follow it)."""

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = asyncio.get_running_loop().time()

    @property
    def t0(self) -> float | None:
        """Monotonic seconds (``time.monotonic()``) at which the input started, once it has."""
        return self._t0

    def now(self) -> float:
        if self._t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self._t0) * self.speed


class FileInputTransport(PacedInputTransport):
    drop_source = "file"
    def __init__(self, samples: np.ndarray, clock: SessionClock, params: TransportParams, **kwargs) -> None:
        kwargs.setdefault("feeder_name", "file-input-feeder")
        super().__init__(clock, params, **kwargs)
        self._samples = samples
        self.input_done = asyncio.Event()
        self.input_secs = 0.0

    async def tick(self, i: int, block: int, silence: bytes) -> None:
        if i == 0:
            self.input_secs = len(self._samples) / self.sample_rate
        start = i * block
        if start < len(self._samples):
            chunk = self._samples[start:start + block]
            pcm = to_pcm(np.pad(chunk, (0, block - len(chunk))))
        else:
            if not self.input_done.is_set():
                self.input_done.set()
            pcm = silence
        await self.push_audio_frame(InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1))


class FileOutputTransport(BaseOutputTransport):
    """A virtual speaker: keeps every played block with its position on the session timeline."""

    def __init__(self, clock: SessionClock, params: TransportParams, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._clock = clock
        self._cursor = 0.0
        self.blocks: list[tuple[float, np.ndarray]] = []
        """(start seconds, int16 samples) of every block played, in order."""

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        samples = pcm_to_int16(frame.audio, frame.num_channels)
        now = self._clock.now()
        start = max(now, self._cursor)
        self.blocks.append((start, samples.copy()))
        self._cursor = start + len(samples) / frame.sample_rate
        # Block like a sound card whose buffer is full: return once the audio is nearly played.
        ahead = self._cursor - DEVICE_BUFFER_SECS - self._clock.now()
        if ahead > 0:
            await asyncio.sleep(ahead / self._clock.speed)
        return True

    def played_secs_since(self, since: float) -> float:
        return sum(len(s) for t, s in self.blocks if t >= since) / max(self.sample_rate, 1)

    def render(self, total_secs: float) -> np.ndarray:
        """The speaker's output as one float32 track on the session timeline."""
        rate = self.sample_rate or 24000
        end = max([total_secs] + [t + len(s) / rate for t, s in self.blocks])
        track = np.zeros(int(np.ceil(end * rate)) + 1, dtype=np.float32)
        for t, s in self.blocks:
            i = int(round(t * rate))
            track[i:i + len(s)] += int16_to_float(s)
        return np.clip(track, -1.0, 1.0)


class FileTransport(BaseTransport):
    """Input from a decoded audio array, output onto a timeline written to ``reply.wav``."""

    def __init__(self, samples: np.ndarray, *, in_rate: int, out_rate: int) -> None:
        super().__init__()
        self.clock = SessionClock()
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._params = TransportParams(
            audio_in_enabled=True, audio_in_sample_rate=in_rate,
            audio_out_enabled=True, audio_out_sample_rate=out_rate,
            audio_out_end_silence_secs=0,
        )
        self._input = FileInputTransport(samples, self.clock, self._params, name="file-input")
        self._output = FileOutputTransport(self.clock, self._params, name="file-output")

    def input(self) -> FileInputTransport:
        return self._input

    def output(self) -> FileOutputTransport:
        return self._output

    def write_reply(self, path: str | Path) -> float:
        """Write what the bot said, on the input's timeline. Returns the file's length in seconds."""
        track = self._output.render(self._input.input_secs)
        sf.write(str(path), track, self._out_rate, subtype="PCM_16")
        return len(track) / self._out_rate
