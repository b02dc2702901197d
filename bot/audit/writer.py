"""The audit-log writer: one append-only, hash-chained, fsynced ``events.jsonl`` per session.

Threading model: :meth:`AuditWriter.open` writes the ``session.start`` record synchronously; after
that every public call only snapshots its arguments and puts them on a queue (it never touches the
disk, so it is safe to call from the asyncio event loop). One background thread takes items off the
queue in order, encodes any audio to FLAC, writes and fsyncs the audio file *before* the record that
references it, fills the audio reference (with the file's SHA-256) into the record, seals the record
into the hash chain and appends it with ``write`` + ``fsync``. A ``kill -9`` therefore loses at most
what was still queued (the turn in flight) and at worst leaves a partial last line that
:func:`bot.audit.verify.verify` reports as such.

Audio design: audio is never given its own API call whose result the caller must plug in later.
The caller passes the samples together with the record that references them (``record(...,
audio={"user.audio": AudioClip(...)})`` or the :meth:`AuditWriter.record_turn` shorthand), and the
writer thread puts the finished reference at that place in ``data``. So the reference in the log is
always the one of the file actually written, and a record never points to a file written after it.

Failures on the writer thread (disk full, permissions changed) never reach the bot: they are logged
once, :attr:`AuditWriter.failed` becomes True, and later records are dropped (a session whose log
stopped early verifies up to the last complete record).
"""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import platform
import queue
import re
import secrets
import sys
import threading
import time as _time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from bot.audit.chain import (
    AUDIO_DIR,
    EVENTS_FILE,
    GENESIS,
    SCHEMA_VERSION,
    canonical,
    seal,
    sha256_bytes,
    to_jsonable,
)
from bot.audit.signing import SIG_FILE, Signer
from bot.errors import VoicebotError
from bot.redact import redact

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


class AudioClip(NamedTuple):
    """Audio to store with a record: mono samples (int16, or float in [-1, 1]) at ``sample_rate``.

    ``name`` is the file stem: ``turn-0001-user`` becomes ``audio/turn-0001-user.flac``.
    """

    name: str
    samples: Any
    sample_rate: int


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_ms(moment: datetime) -> str:
    """``2026-11-22T11:50:00.123Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def platform_info() -> dict[str, str]:
    return {"python": platform.python_version(), "system": platform.system(),
            "release": platform.release(), "machine": platform.machine()}


_OPEN_WRITERS: "weakref.WeakSet[AuditWriter]" = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:  # atexit runs while the daemon writer threads are still alive
    for writer in list(_OPEN_WRITERS):
        writer.close(reason="exit")


class AuditWriter:
    """Writes one session's audit directory. Create with :meth:`open`; always :meth:`close`."""

    def __init__(self, session_dir: Path, session_id: str, fd: int, store_audio: bool,
                 t0: float, head: str, signer: Signer | None = None, sig_fd: int | None = None) -> None:
        self.dir = session_dir
        self.signer = signer
        self._sig_fd = sig_fd
        self.session_id = session_id
        self.store_audio = store_audio
        self.failed = False
        self.error: str | None = None
        self._fd: int | None = fd
        self._t0 = t0
        self._seq = 1               # writer thread only
        self._prev = head           # writer thread only
        self._audio_names: set[str] = set()  # writer thread only
        self._lock = threading.Lock()
        self._closed = False
        self._warned_closed = False
        self._turns = 0
        self._errors = 0
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"voicebot-audit-{session_id}", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, base_dir: str | os.PathLike[str], header: Mapping[str, Any],
             store_audio: bool = True, signer: Signer | None = None) -> AuditWriter:
        """Create ``base_dir/<UTC stamp>-<id>/`` (mode 0700) and write ``session.start`` before returning.

        ``header`` is merged into the ``session.start`` data; the writer adds ``schema_version``,
        ``session_id`` and ``store_audio`` (these win over the caller's) and ``platform`` if absent.
        With a ``signer`` every record's hash is signed into ``events.sig`` (see
        :mod:`bot.audit.signing`) and ``session.start`` carries ``signing: {alg, id}``.
        Raises :class:`VoicebotError` if the directory or log cannot be created.
        """
        base = Path(base_dir).expanduser()
        try:
            base.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            started = utc_now()
            t0 = _time.monotonic()
            for _ in range(100):
                session_id = secrets.token_hex(3)
                session_dir = base / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{session_id}"
                try:
                    os.mkdir(session_dir, DIR_MODE)
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 100 collisions of a 24-bit id in one second
                raise FileExistsError(str(base))
            os.chmod(session_dir, DIR_MODE)  # mkdir's mode is filtered by the umask: set it exactly
            if store_audio:
                os.mkdir(session_dir / AUDIO_DIR, DIR_MODE)
                os.chmod(session_dir / AUDIO_DIR, DIR_MODE)
            fd = os.open(session_dir / EVENTS_FILE,
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                         FILE_MODE)
            os.fchmod(fd, FILE_MODE)
            sig_fd = None
            data = dict(to_jsonable(dict(header)))
            data.setdefault("platform", platform_info())
            data.update(schema_version=SCHEMA_VERSION, session_id=session_id, store_audio=bool(store_audio))
            if signer is not None:
                data["signing"] = signer.describe()
                sig_fd = os.open(session_dir / SIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                                 | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
                os.fchmod(sig_fd, FILE_MODE)
            record = seal(0, iso_ms(started), 0.0, "session.start", redact(data), GENESIS)
            _sign(sig_fd, signer, record)
            _write_all(fd, canonical(record) + b"\n")
            os.fsync(fd)
            _fsync_dir(session_dir)
            _fsync_dir(base)
        except OSError as exc:
            raise VoicebotError(f"cannot create the audit log in {base}: {exc.strerror or exc}: "
                                "set audit.dir to a writable folder (or audit.enabled = false)") from None
        return cls(session_dir, session_id, fd, store_audio, t0, record["hash"], signer, sig_fd)

    @property
    def events_path(self) -> Path:
        return self.dir / EVENTS_FILE

    # ------------------------------------------------------------------ public, non-blocking

    def record(self, type: str, data: Mapping[str, Any] | None = None, *,
               audio: Mapping[str, AudioClip] | None = None) -> None:
        """Queue one record. Never blocks on I/O; safe from the event loop and from any thread.

        ``data`` is snapshotted now (later changes by the caller are not seen). ``audio`` maps a
        dotted path inside ``data`` (``"user.audio"``, ``"bot_audio"``) to a clip; the writer thread
        stores the clip and puts its audio reference at that path (None if audio is not stored).
        """
        if not isinstance(type, str) or not type:
            raise ValueError("audit record type must be a non-empty string")
        if self.failed:  # already logged; nothing more will be written
            return
        payload = to_jsonable(dict(data or {}))
        clips: list[tuple[str, AudioClip]] = []
        for path, clip in (audio or {}).items():
            if clip is None or not self.store_audio:
                _put_path(payload, path, None)
                continue
            import numpy as np  # noqa: PLC0415 - numpy is only needed when audio is stored

            clips.append((path, AudioClip(str(clip.name), np.array(clip.samples, copy=True),
                                          int(clip.sample_rate))))
        with self._lock:
            if self._closed:
                if not self._warned_closed:
                    self._warned_closed = True
                    log.warning("audit log %s is closed; dropping %r record", self.dir, type)
                return
            if type == "turn":
                self._turns += 1
            elif type == "error":
                self._errors += 1
            stamp, t = self._stamp()
            self._queue.put(("record", type, payload, stamp, t, clips))

    def record_turn(self, data: Mapping[str, Any], user_audio: tuple[Any, int] | None = None,
                    bot_audio: tuple[Any, int] | None = None) -> None:
        """Queue the ``turn`` summary record with its audio (``(samples, sample_rate)`` each).

        Files are ``audio/turn-NNNN-user.flac`` and ``audio/turn-NNNN-bot.flac`` (NNNN = ``data["turn"]``);
        their references land in ``data["user"]["audio"]`` and ``data["bot_audio"]``.
        """
        payload = dict(data)
        turn = payload.get("turn")
        stem = f"turn-{turn:04d}" if isinstance(turn, int) else "turn-x"
        if isinstance(payload.get("user"), Mapping):
            payload["user"] = dict(payload["user"])
        elif user_audio is not None:
            payload["user"] = {}
        audio: dict[str, AudioClip | None] = {}
        if isinstance(payload.get("user"), dict):
            audio["user.audio"] = (None if user_audio is None
                                   else AudioClip(f"{stem}-user", user_audio[0], user_audio[1]))
        audio["bot_audio"] = None if bot_audio is None else AudioClip(f"{stem}-bot", bot_audio[0], bot_audio[1])
        self.record("turn", payload, audio=audio)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ public, blocking

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is on disk (or dropped after a failure).

        Returns False on timeout. Blocks: from asyncio use ``await writer.aflush()``.
        """
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout)

    def close(self, reason: str = "ended", **extra: Any) -> None:
        """Write ``session.end`` (``reason``, ``turns``, ``errors`` and ``extra``), drain, stop. Idempotent."""
        self._begin_close(reason, **extra)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        _OPEN_WRITERS.discard(self)

    def _begin_close(self, reason: str, **extra: Any) -> None:
        with self._lock:
            if self._closed:
                return
            stamp, t = self._stamp()
            data = {"reason": str(reason), "turns": self._turns, "errors": self._errors}
            data.update(to_jsonable(extra))
            self._queue.put(("record", "session.end", data, stamp, t, []))
            self._queue.put(("stop",))
            self._closed = True

    async def aflush(self) -> bool:
        return await asyncio.to_thread(self.flush)

    async def aclose(self, reason: str = "ended", **extra: Any) -> None:
        """:meth:`close` without blocking the event loop. It waits for the writer thread itself rather than
        through ``asyncio.to_thread``: when a session is stopped (a signal), the default executor may be busy
        with model calls that cannot be interrupted, and the log must be closed without waiting for them."""
        self._begin_close(reason, **extra)
        while self._thread.is_alive() and threading.current_thread() is not self._thread:
            await asyncio.sleep(0.005)
        _OPEN_WRITERS.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(reason="ended" if exc_type is None else f"error: {exc_type.__name__}")

    # ------------------------------------------------------------------ writer thread

    def _stamp(self) -> tuple[str, float]:
        return iso_ms(utc_now()), round(_time.monotonic() - self._t0, 6)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            kind = item[0]
            if kind == "flush":
                item[1].set()
                continue
            if kind == "stop":
                break
            if self.failed:
                continue
            try:
                self._write_record(*item[1:])
            except BaseException as exc:  # noqa: BLE001 - the bot must keep running
                self._fail(exc)
        for name in ("_fd", "_sig_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _write_record(self, type: str, data: dict[str, Any], stamp: str, t: float,
                      clips: list[tuple[str, AudioClip]]) -> None:
        for path, clip in clips:
            try:
                ref = self._write_audio(clip)
            except Exception as exc:  # noqa: BLE001 - a bad clip must not lose the record
                ref = None
                note = f"audio {clip.name}: not stored: {exc}"
                log.warning("audit log %s: %s", self.dir, note)
                errors = data.setdefault("errors", [])
                if isinstance(errors, list):
                    errors.append(note)
            _put_path(data, path, ref)
        record = seal(self._seq, stamp, t, type, redact(data), self._prev)
        assert self._fd is not None
        _sign(self._sig_fd, self.signer, record)  # before the record: every record in the log has its signature
        _write_all(self._fd, canonical(record) + b"\n")
        os.fsync(self._fd)
        self._seq += 1
        self._prev = record["hash"]

    def _write_audio(self, clip: AudioClip) -> dict[str, Any]:
        import soundfile as sf  # noqa: PLC0415 - only needed when audio is stored

        from bot.audio import as_int16, to_mono  # noqa: PLC0415

        pcm = as_int16(to_mono(clip.samples))
        rate = int(clip.sample_rate)
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        buf = io.BytesIO()
        sf.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
        blob = buf.getvalue()
        name = self._unique_name(clip.name)
        rel = f"{AUDIO_DIR}/{name}.flac"
        final = self.dir / rel
        tmp = self.dir / AUDIO_DIR / f".{name}.flac.tmp"
        final.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            _write_all(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return {"file": rel, "sha256": sha256_bytes(blob), "sample_rate": rate,
                "duration_s": round(len(pcm) / rate, 3)}

    def _unique_name(self, name: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "clip"
        candidate, n = stem, 1
        while candidate in self._audio_names or (self.dir / AUDIO_DIR / f"{candidate}.flac").exists():
            n += 1
            candidate = f"{stem}-{n}"
        self._audio_names.add(candidate)
        return candidate

    def _fail(self, exc: BaseException) -> None:
        if self.failed:
            return
        self.failed = True
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("audit log %s stopped after record %d: %s; the bot keeps running, but this "
                  "session's audit log is incomplete from here on", self.dir, self._seq - 1, self.error)


def _put_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target = data
    for part in parts[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            target[part] = nxt
        target = nxt
    target[parts[-1]] = value


def _sign(sig_fd: int | None, signer: Signer | None, record: dict[str, Any]) -> None:
    if sig_fd is None or signer is None:
        return
    line = {"seq": record["seq"], "hash": record["hash"], "sig": signer.sign(record["hash"])}
    _write_all(sig_fd, canonical(line) + b"\n")
    os.fsync(sig_fd)


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    if sys.platform.startswith("win"):  # pragma: no cover - directories cannot be fsynced there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
