"""Check before work: every file or folder a command will write is validated before the work starts.

A 30-minute session must not end with "read-only file system" and lose its reply. Each output path
(``run -o``, ``audit.dir``, ``audit report -o``) is checked here first: the format is known from the
suffix, the path is not one of the inputs, its folder exists and a file can really be created in it
(a test file is written and removed). Every failure is one :class:`VoicebotError` line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bot.errors import VoicebotError

REPLY_FORMATS = (".wav", ".flac")
"""What ``run -o`` can write (16-bit PCM through soundfile)."""

REPORT_FORMATS = (".html", ".htm")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``; raises OSError if that cannot be done."""
    fd, name = tempfile.mkstemp(prefix=".voicebot-write-check-", dir=folder)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
        os.unlink(name)


def check_output_file(path: str | os.PathLike[str], *, what: str, option: str, formats: Iterable[str],
                      inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Validate a file the command will write at the end: known format, not an input, writable. Returns it."""
    out = Path(path).expanduser()
    formats = tuple(formats)
    if out.suffix.lower() not in formats:
        raise VoicebotError(f"{option} {out}: cannot tell the {what} format from {out.suffix or 'no suffix'!r}: "
                            f"end the name with {' or '.join(formats)}")
    for source in inputs:
        src = Path(source).expanduser()
        if _same(out, src) or out.resolve() == src.resolve():
            raise VoicebotError(f"{option} {out} is the input file: writing the {what} there would overwrite it; "
                                "pick another path")
    if out.is_dir():
        raise VoicebotError(f"{option} {out} is a folder: give a file name ({out / ('out' + formats[0])})")
    folder = out.parent
    if not folder.exists():
        raise VoicebotError(f"{option} {out}: folder {folder} does not exist: create it or pick another path")
    if not folder.is_dir():
        raise VoicebotError(f"{option} {out}: {folder} is a file, not a folder: pick another path")
    try:
        _probe(folder)
        if out.exists():
            with open(out, "ab"):
                pass
    except OSError as exc:
        raise VoicebotError(f"cannot write the {what} to {out} ({_reason(exc)}): pick a writable {option}") from None
    return out


def check_output_dir(path: str | os.PathLike[str], *, what: str, setting: str) -> Path:
    """Check that a folder the command will write into can be written (or created: then its nearest existing
    parent is test-written; nothing is created here). Returns it."""
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise VoicebotError(f"{setting} {folder}: {existing} is a file, not a folder: set {setting} to a folder")
    try:
        _probe(existing)
    except OSError as exc:
        raise VoicebotError(f"cannot write the {what} in {folder} ({_reason(exc)}): set {setting} to a writable "
                            "folder") from None
    return folder


def write_failed(what: str, path: Path, exc: OSError, kept: str) -> VoicebotError:
    """The one line for a write that failed at the end anyway (disk full, file system gone read-only)."""
    return VoicebotError(f"could not write the {what} to {path} ({_reason(exc)}); {kept}")
