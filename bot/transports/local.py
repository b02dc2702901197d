"""Microphone and speaker through PortAudio (the ``sounddevice`` package).

The devices run at whatever rate they like (their default rate, usually 44.1 or 48 kHz); soxr
streaming resamplers convert the microphone to the pipeline's 16 kHz and the bot's 24 kHz speech to
the speaker's rate. Both streams use 20 ms blocks.

The speaker is fed the way the file transport's virtual speaker is: ``write_audio_frame`` returns once
no more than :data:`OUTPUT_AHEAD_SECS` of audio is waiting, so an interruption silences the bot within
one block instead of after seconds of buffered speech (and the waiting audio is dropped at once).
Everything handed to the speaker is also pushed to an :class:`~bot.echo.EchoReference`, which the
``aec`` echo policy subtracts from the microphone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bot.audio import Resampler, pcm_to_int16, to_pcm, upmix
from bot.config import TransportConfig
from bot.echo import CAPTURED_AT, EchoReference
from bot.errors import VoicebotError
from bot.transports.file import SessionClock
from bot.transports.overload import CATCH_UP_SECS, MAX_BUFFER_SECS, AudioRing, BoundedInput

BLOCK_SECS = 0.02
"""Both streams exchange audio with PortAudio in blocks of this length."""
OUTPUT_AHEAD_SECS = 0.04
"""At most this much of the bot's speech waits for the speaker beyond PortAudio's own buffer."""
RATES = (48000, 44100, 32000, 24000, 16000)
"""Rates tried, after the device's default rate, until the device accepts one."""

Kind = Literal["input", "output"]


def sounddevice():
    """The sounddevice module, or a one-line error when PortAudio itself is missing."""
    try:
        import sounddevice as sd
    except OSError as exc:
        raise VoicebotError(f"PortAudio is not installed ({exc}): install it (Debian/Ubuntu: apt install "
                            "libportaudio2, macOS: brew install portaudio) to use the microphone") from None
    return sd


def _start(stream, what: str, key: str) -> None:
    """Start a device stream, or raise a one-line error that says how to pick another device."""
    try:
        stream.start()
    except Exception as exc:  # noqa: BLE001
        raise VoicebotError(f"cannot start {what} {stream.device.name!r} ({exc}): pick another with "
                            f"{key} (see `voicebot devices`)") from None


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_rate: int
    default_input: bool = False
    default_output: bool = False

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs


def list_devices() -> list[Device]:
    sd = sounddevice()
    try:
        raw = sd.query_devices()
        apis = [a["name"] for a in sd.query_hostapis()]
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        raise VoicebotError(f"PortAudio cannot list the audio devices ({exc}): check your sound system") from None
    out = []
    for d in raw:
        out.append(Device(index=d["index"], name=d["name"], hostapi=apis[d["hostapi"]] if d["hostapi"] < len(apis)
                          else str(d["hostapi"]), inputs=d["max_input_channels"], outputs=d["max_output_channels"],
                          default_rate=int(d["default_samplerate"]), default_input=d["index"] == default_in,
                          default_output=d["index"] == default_out))
    return out


def format_devices(devices: list[Device]) -> str:
    """The table ``voicebot devices`` prints: '>' marks the default microphone, '<' the default speaker."""
    width = max([len(d.name) for d in devices] + [4])
    lines = [f"    #  {'name':<{width}}  in  out  rate    host API"]
    for d in devices:
        mark = ("*" if d.default_input and d.default_output else ">" if d.default_input
                else "<" if d.default_output else " ")
        lines.append(f"{mark} {d.index:>3}  {d.name:<{width}}  {d.inputs:>2}  {d.outputs:>3}  {d.default_rate:<6}  "
                     f"{d.hostapi}")
    return "\n".join(lines)


def _what(kind: Kind) -> tuple[str, str]:
    return ("microphone", "transport.input_device") if kind == "input" else ("speaker", "transport.output_device")


def find_device(spec: str | int | None, kind: Kind, devices: list[Device] | None = None) -> Device:
    """The device ``spec`` names (an index, an exact name or a unique part of one); None = the default."""
    what, key = _what(kind)
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        raise VoicebotError(f"no {what} found: connect one (PortAudio sees no {kind} device), "
                            f"then check `voicebot devices`")
    spec = None if spec is None or str(spec).strip() == "" else str(spec).strip()
    if spec is None:
        chosen = [d for d in usable if (d.default_input if kind == "input" else d.default_output)]
        return chosen[0] if chosen else usable[0]
    if spec.lstrip("-").isdigit():
        index = int(spec)
        match = [d for d in devices if d.index == index]
        if not match:
            raise VoicebotError(f"{key} {index}: there is no device {index}; `voicebot devices` lists them")
        if match[0].channels(kind) == 0:
            raise VoicebotError(f"{key} {index}: {match[0].name!r} is not a {what} (no {kind} channels); "
                                "`voicebot devices` lists them")
        return match[0]
    wanted = spec.casefold()
    exact = [d for d in usable if d.name.casefold() == wanted]
    if exact:
        return exact[0]
    partial = [d for d in usable if wanted in d.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise VoicebotError(f"{key} {spec!r}: no {what} has that name; `voicebot devices` lists them "
                            "(give an index or part of a name)")
    names = ", ".join(f"{d.index} {d.name!r}" for d in partial[:5])
    raise VoicebotError(f"{key} {spec!r} matches several {what}s ({names}): give its index; "
                        "`voicebot devices` lists them")


def pick_format(device: Device, kind: Kind) -> tuple[int, int]:
    """(rate, channels) the device accepts for 16-bit audio: its default rate if it can, mono if it can."""
    sd = sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    rates = [device.default_rate] + [r for r in RATES if r != device.default_rate]
    for rate in rates:
        for channels in (1, 2):
            if channels > device.channels(kind):
                continue
            try:
                check(device=device.index, samplerate=rate, channels=channels, dtype="int16")
            except Exception:  # noqa: BLE001 - PortAudioError or ValueError: just not this format
                continue
            return rate, channels
    what, key = _what(kind)
    raise VoicebotError(f"{what} {device.name!r} accepts no 16-bit audio at 16-48 kHz: pick another with "
                        f"{key} (see `voicebot devices`)")


class _Stream:
    """One opened PortAudio stream and what it was opened with."""

    def __init__(self, kind: Kind, device: Device, callback) -> None:
        sd = sounddevice()
        self.kind = kind
        self.device = device
        self.rate, self.channels = pick_format(device, kind)
        self.block = int(round(self.rate * BLOCK_SECS))
        cls = sd.RawInputStream if kind == "input" else sd.RawOutputStream
        what, key = _what(kind)
        try:
            self.stream = cls(device=device.index, samplerate=self.rate, channels=self.channels, dtype="int16",
                              blocksize=self.block, latency="low", callback=callback)
        except Exception as exc:  # noqa: BLE001 - PortAudioError mostly; any failure here is the device's
            reason = str(exc).split("\n")[0]
            raise VoicebotError(f"cannot open {what} {device.name!r} ({reason}): pick another with {key} "
                                "(see `voicebot devices`)") from None
        self._lock = threading.Lock()
        self.closed = False

    @property
    def latency(self) -> float:
        try:
            return float(self.stream.latency)
        except Exception:  # noqa: BLE001
            return 0.0

    def start(self) -> None:
        if not self.closed and not self.stream.active:
            self.stream.start()

    def close(self, *, abort: bool = True) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            if abort:
                self.stream.abort(ignore_errors=True)
            else:
                self.stream.stop(ignore_errors=True)
        finally:
            self.stream.close(ignore_errors=True)

    def describe(self) -> str:
        return f"{self.device.name} (#{self.device.index}, {self.rate} Hz)"


class LocalAudioInputTransport(BoundedInput, BaseInputTransport):
    """The microphone: 20 ms blocks from PortAudio, resampled to the pipeline rate, pushed as they come.

    Bounded (:mod:`bot.transports.overload`): PortAudio's thread puts each block in an :class:`AudioRing`
    holding at most ``MAX_BUFFER_SECS`` (the oldest blocks are dropped beyond it), and the pump takes them
    out no faster than real time (plus ``CATCH_UP_SECS``) and only while pipecat's input queue keeps up.
    A device that delivers faster than real time therefore costs dropped audio, not memory."""

    drop_source = "microphone"

    def __init__(self, transport: LocalAudioTransport, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._ring: AudioRing[tuple[float, bytes]] = AudioRing(MAX_BUFFER_SECS, self.drops)
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task | None = None
        self._resampler: Resampler | None = None
        self._pending = np.zeros(0, dtype=np.int16)

    def callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if self._loop is None:
            return
        self._ring.put((time.monotonic(), bytes(indata)), frames / self._transport.mic.rate)

    def _wake(self) -> None:  # any thread: the ring got its first block
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closing
            pass

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._pump_task is None:
            stream = self._transport.mic
            self._loop = asyncio.get_running_loop()
            self._ring.wake = self._wake
            self._resampler = Resampler(self.sample_rate, stream.rate)
            self._pump_task = self.create_task(self._pump(), name="mic-pump")
            _start(stream, "microphone", "transport.input_device")
        await self.set_transport_ready(frame)

    async def _next_block(self) -> tuple[float, bytes]:
        while True:
            item = self._ring.pop()
            if item is not None:
                return item
            self._ready.clear()
            if len(self._ring):  # a block came between pop() and clear()
                continue
            await self._ready.wait()

    async def _pump(self) -> None:
        assert self._resampler is not None
        stream = self._transport.mic
        rate = self.sample_rate
        block = int(rate * BLOCK_SECS)
        loop = asyncio.get_running_loop()
        t0, pushed = loop.time(), 0.0  # real-time pace: audio pushed may run ahead of the wall clock by
        while True:                    # CATCH_UP_SECS at most
            captured_at, data = await self._next_block()
            if self._transport.clock.t0 is None:
                self._transport.clock.start()
            samples = self._resampler.process(pcm_to_int16(data, stream.channels))
            self._pending = np.concatenate([self._pending, samples])
            while len(self._pending) >= block:
                chunk, self._pending = self._pending[:block], self._pending[block:]
                frame = InputAudioRawFrame(audio=chunk.tobytes(), sample_rate=rate, num_channels=1)
                frame.metadata[CAPTURED_AT] = captured_at
                while self.behind:  # the pipeline has not taken what it got; the ring drops meanwhile
                    self._ring.reason = "pipeline-behind"
                    await asyncio.sleep(BLOCK_SECS)
                self._ring.reason = "input-faster-than-real-time"
                await self.push_audio_frame(frame)
                pushed += BLOCK_SECS
                now = loop.time()
                if t0 + pushed < now - CATCH_UP_SECS:  # the device fell behind (or started late): no debt
                    t0, pushed = now - CATCH_UP_SECS, 0.0
                ahead = t0 + pushed - now - CATCH_UP_SECS
                if ahead > 0:  # faster than real time: the device is not a real-time clock
                    await asyncio.sleep(ahead)
            if not self._transport.listening.is_set():
                self._transport.listening.set()

    async def _stop(self) -> None:
        self._transport.mic.close()
        if self._pump_task is not None:
            await self.cancel_task(self._pump_task)
            self._pump_task = None
        self._ring.clear()
        self.drops.flush()

    async def stop(self, frame: EndFrame) -> None:
        await self._stop()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        await super().cleanup()
        self._transport.mic.close()


class LocalAudioOutputTransport(BaseOutputTransport):
    """The speaker: the bot's speech resampled to the device rate, handed over a block at a time."""

    def __init__(self, transport: LocalAudioTransport, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._transport = transport
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._resampler: Resampler | None = None
        self.played_secs = 0.0
        """Seconds of non-silent bot audio handed to the device so far."""

    def callback(self, outdata, frames, time_info, status) -> None:  # PortAudio's thread
        stream = self._transport.speaker
        need = frames * 2
        with self._lock:
            chunk = bytes(self._buffer[:need])
            del self._buffer[:need]
        if chunk:
            self.played_secs += len(chunk) / 2 / stream.rate
        if len(chunk) < need:
            chunk += bytes(need - len(chunk))
        if stream.channels > 1:
            outdata[:] = to_pcm(upmix(pcm_to_int16(chunk), stream.channels))
        else:
            outdata[:] = chunk
        reference = self._transport.echo_reference
        if reference is not None:
            reference.push(chunk, stream.rate, time.monotonic())

    def _buffered_secs(self) -> float:
        with self._lock:
            return len(self._buffer) / 2 / self._transport.speaker.rate

    def clear(self) -> None:
        """Drop the speech waiting for the speaker (an interruption)."""
        with self._lock:
            self._buffer.clear()
        if self._resampler is not None:
            self._resampler.reset()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        stream = self._transport.speaker
        _start(stream, "speaker", "transport.output_device")
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self.clear()
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        stream = self._transport.speaker
        if stream.closed:
            return False
        if self._resampler is None:
            self._resampler = Resampler(stream.rate)
        samples = self._resampler.process(pcm_to_int16(frame.audio, frame.num_channels), frame.sample_rate)
        with self._lock:
            self._buffer.extend(to_pcm(samples))
        # Block like a sound card whose buffer is full: return once little enough is waiting.
        while not stream.closed:
            ahead = self._buffered_secs() - OUTPUT_AHEAD_SECS
            if ahead <= 0:
                break
            await asyncio.sleep(ahead)
        return True

    async def _drain(self, timeout: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._buffered_secs() > 0 and loop.time() < deadline and not self._transport.speaker.closed:
            await asyncio.sleep(0.01)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._drain()
        self._transport.speaker.close()

    async def cancel(self, frame: CancelFrame) -> None:
        self.clear()
        self._transport.speaker.close()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        await super().cleanup()
        self._transport.speaker.close()


class LocalAudioTransport(BaseTransport):
    """The default (or chosen) microphone and speaker. Opening it opens both devices, so a missing or
    busy device fails here, in one line, before any model loads."""

    default_echo = "half-duplex"
    """``transport.echo = "auto"`` means half-duplex here: open speakers are the common case."""

    def __init__(self, cfg: TransportConfig) -> None:
        super().__init__()
        self.clock = SessionClock()
        self.listening = asyncio.Event()
        """Set once the first microphone block has been pushed into the pipeline."""
        self.echo_reference: EchoReference | None = EchoReference()
        devices = list_devices()
        mic_dev = find_device(cfg.input_device, "input", devices)
        speaker_dev = find_device(cfg.output_device, "output", devices)
        params = TransportParams(
            audio_in_enabled=True, audio_in_sample_rate=cfg.sample_rate,
            audio_out_enabled=True, audio_out_sample_rate=cfg.output_sample_rate,
            audio_out_end_silence_secs=0,
        )
        self._input = LocalAudioInputTransport(self, params, name="mic-input")
        self._output = LocalAudioOutputTransport(self, params, name="speaker-output")
        self.mic = _Stream("input", mic_dev, self._input.callback)
        try:
            self.speaker = _Stream("output", speaker_dev, self._output.callback)
        except BaseException:
            self.mic.close()
            raise

    @property
    def echo_latency_secs(self) -> float:
        """How long after the pipeline hands over the bot's last audio it can still reach the mic."""
        return self.speaker.latency + OUTPUT_AHEAD_SECS + BLOCK_SECS + self.mic.latency

    def describe(self) -> str:
        return f"microphone {self.mic.describe()}, speaker {self.speaker.describe()}"

    def input(self) -> LocalAudioInputTransport:
        return self._input

    def output(self) -> LocalAudioOutputTransport:
        return self._output

    def close(self) -> None:
        """Close both devices (idempotent; the transports also close them when the pipeline ends)."""
        self.mic.close()
        self.speaker.close()
