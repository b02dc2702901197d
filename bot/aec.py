"""WebRTC's AEC3 echo canceller (from the ``livekit`` package), run in a process of its own.

:class:`WebRtcEchoCanceller` is what :mod:`bot.echo`'s ``aec`` policy uses: ``far()`` takes what the
speaker played, ``near()`` what the microphone heard, and returns it with the echo removed. The audio
processing itself runs in a child process (:func:`serve`, started with ``python -c``; this module imports
neither pipecat nor the rest of voicebot but :mod:`bot.audio` (numpy and soxr), so the child starts in well
under a second).

Why a process: livekit's native runtime (tokio threads in ``liblivekit_ffi.so``) calls into Python from its
own worker threads (it forwards its log records). One such call that lands while the interpreter is
finalizing is unwound through Rust code, and the process aborts: ``thread 'tokio-rt-worker' panicked ...
panic in a function that cannot unwind ... aborting`` (issue 11: intermittently at the end of the test
run, failing CI on a green suite). In the child, the runtime lives in a process that never finalizes: it
leaves with ``os._exit`` when its socket closes. No livekit object is ever created in the parent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bot.audio import Resampler, pcm_to_int16
from bot.errors import VoicebotError

AEC_FRAME_SECS = 0.01
"""WebRTC's audio processing works on 10 ms frames."""
START_TIMEOUT_SECS = 30.0
"""How long the echo canceller's process may take to start (importing livekit on a busy CPU)."""
NEAR_TIMEOUT_SECS = 1.0
"""A microphone block the canceller has not answered in this long ends it (a hung or starved child process
must not hold the audio up): the caller falls back."""


def _load_apm():
    try:
        from livekit import rtc
    except ImportError as exc:  # pragma: no cover - livekit is a dependency
        raise VoicebotError(f"transport.echo = aec needs the livekit package ({exc}): `pip install livekit`, "
                            "or use transport.echo = half-duplex") from None
    return rtc


class _Apm:
    """WebRTC's audio processing module (AEC3 echo canceller + high-pass filter) on mono int16 audio, in this
    process. Used inside the AEC process only (:func:`serve`)."""

    def __init__(self, rate: int, noise_suppression: bool, delay_ms: int | None) -> None:
        rtc = _load_apm()
        self._rtc = rtc
        self.rate = rate
        self._n = int(rate * AEC_FRAME_SECS)
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, noise_suppression=noise_suppression,
                                              high_pass_filter=True, auto_gain_control=False)
        self._delay_ms = delay_ms
        self._far = np.zeros(0, dtype=np.int16)
        self._near = np.zeros(0, dtype=np.int16)
        self._resampler = Resampler(rate)

    def far(self, pcm: bytes, rate: int) -> None:
        samples = self._resampler.process(pcm_to_int16(pcm), rate)
        self._far = np.concatenate([self._far, samples.astype(np.int16, copy=False)])
        n = self._n
        while len(self._far) >= n:
            frame = self._rtc.AudioFrame(self._far[:n].tobytes(), self.rate, 1, n)
            self._apm.process_reverse_stream(frame)
            self._far = self._far[n:]

    def near(self, pcm: bytes) -> bytes:
        self._near = np.concatenate([self._near, pcm_to_int16(pcm)])
        n = self._n
        out = []
        while len(self._near) >= n:
            frame = self._rtc.AudioFrame(self._near[:n].tobytes(), self.rate, 1, n)
            if self._delay_ms is not None:
                self._apm.set_stream_delay_ms(self._delay_ms)
            self._apm.process_stream(frame)
            out.append(frame.data.tobytes())
            self._near = self._near[n:]
        return b"".join(out)


def serve(fd: int, rate: int, noise_suppression: bool, delay_ms: int | None) -> None:
    """The AEC process: runs an :class:`_Apm` for its parent (over the socket ``fd``) until the socket
    closes, then ``os._exit``.

    livekit's native runtime (tokio threads in ``liblivekit_ffi.so``) calls into Python from its own worker
    threads (its log records); one that lands while the interpreter is finalizing is unwound through Rust
    code and the process aborts ("panic in a function that cannot unwind", issue 11). Here the runtime lives
    only in this process, which never finalizes: it leaves with ``os._exit``."""
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent; it closes the socket
    conn = Connection(fd)
    code = 0
    try:
        try:
            apm = _Apm(rate, noise_suppression, delay_ms)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            conn.send(("error", str(exc)))
            return
        conn.send(("ready", ""))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] != "near":  # "close"
                break
            for pcm, far_rate in msg[2]:
                apm.far(pcm, far_rate)
            conn.send(apm.near(msg[1]))
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        os._exit(code)


class WebRtcEchoCanceller:
    """WebRTC's audio processing module (AEC3 echo canceller + high-pass filter) on mono int16 audio.

    ``far()`` takes what the speaker played (any rate), ``near()`` what the microphone heard (at
    ``rate``) and returns it with the echo removed. Feed the far end before the near end that holds
    its echo; AEC3 finds the delay between them itself (``delay_ms`` is only a starting hint).

    The module runs in a child process of its own (:func:`serve`), so livekit's native runtime
    never lives in a process that finalizes (that is where it panicked); the far end is sent along with
    the next near-end block, one round trip per microphone block. :meth:`close` (also on garbage
    collection and at exit) ends the process; it also ends when this process does.
    """

    def __init__(self, rate: int = 16000, *, noise_suppression: bool = False, delay_ms: int | None = None) -> None:
        _load_apm()  # a missing package fails here, in one line
        self.rate = rate
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)  # the same voicebot code in the child
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        code = ("import sys; from bot.aec import serve; "
                "serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1', "
                "None if sys.argv[4] == '' else int(sys.argv[4]))")
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(rate), "1" if noise_suppression else "0",
                 "" if delay_ms is None else str(delay_ms)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        self._conn = Connection(ours.detach())
        self._pending_far: list[tuple[bytes, int]] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            status, detail = self._conn.recv() if self._conn.poll(START_TIMEOUT_SECS) else ("error", "no answer")
        except (EOFError, OSError) as exc:
            status, detail = "error", str(exc) or "it exited"
        if status != "ready":
            self.close()
            raise VoicebotError(f"the echo canceller did not start ({detail}): use transport.echo = half-duplex")
        self._finalizer = weakref.finalize(self, _end_process, self._conn, self._proc)

    @property
    def process(self) -> subprocess.Popen:
        """The child process running the audio processing module."""
        return self._proc

    def far(self, pcm: bytes | np.ndarray, rate: int) -> None:
        data = pcm.astype("<i2", copy=False).tobytes() if isinstance(pcm, np.ndarray) else bytes(pcm)
        with self._lock:
            self._pending_far.append((data, rate))

    def near(self, pcm: bytes) -> bytes:
        with self._lock:
            far, self._pending_far = self._pending_far, []
            if self._closed:
                raise VoicebotError("the echo canceller is closed")
            try:
                self._conn.send(("near", bytes(pcm), far))
                answered = self._conn.poll(NEAR_TIMEOUT_SECS)
                if answered:
                    return self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                self._closed = True
                raise VoicebotError("the echo canceller process stopped: use transport.echo = half-duplex") from None
            self._closed = True  # a late answer would pair with the wrong block: this canceller is done
            raise VoicebotError(f"the echo canceller did not answer within {NEAR_TIMEOUT_SECS:g} s (CPU starved?): "
                                "use transport.echo = half-duplex")

    def close(self) -> None:
        """End the canceller's process (idempotent)."""
        self._closed = True
        _end_process(self._conn, self._proc)


def _end_process(conn: Any, proc: subprocess.Popen) -> None:
    with contextlib.suppress(Exception):
        conn.send(("close",))
    with contextlib.suppress(Exception):
        conn.close()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=1)
