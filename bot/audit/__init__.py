"""Alignment audit log: a tamper-evident, offline-verifiable record of every session.

``AuditWriter.open(...)`` writes ``<audit.dir>/<UTC stamp>-<id>/events.jsonl`` (hash-chained,
fsynced per record, written by one background thread) plus per-turn FLAC audio; ``verify(dir)``
checks it; ``show(dir)`` renders it for a reviewer; ``read_session(dir)`` parses it.
The format is specified in docs/audit-log.md.
"""

from bot.audit.chain import SCHEMA_VERSION
from bot.audit.read import Session, Turn, list_sessions, read_session
from bot.audit.show import show
from bot.audit.verify import VerifyResult, verify
from bot.audit.writer import AudioClip, AuditWriter

__all__ = [
    "SCHEMA_VERSION",
    "AudioClip",
    "AuditWriter",
    "Session",
    "Turn",
    "VerifyResult",
    "list_sessions",
    "read_session",
    "show",
    "verify",
]
