"""The hash chain: canonical serialization and hashing, shared by the writer and the verifier.

Every line of ``events.jsonl`` is one record serialized by :func:`canonical`. A record's ``hash`` is
the SHA-256 of the canonical bytes of the record *without* its ``hash`` key; ``prev_hash`` is the
previous record's ``hash`` (:data:`GENESIS` for the first). Keep this the only place that decides
those bytes: the writer and :func:`bot.audit.verify.verify` must agree on them exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.4"
"""Version of the audit-log format written by this voicebot (see docs/audit-log.md)."""

SCHEMA_MAJOR = 1
"""Logs with this major version can be read and verified; a newer major means "upgrade voicebot"."""

GENESIS = "0" * 64
"""``prev_hash`` of the first record."""

RECORD_KEYS = ("seq", "time", "t", "type", "data", "prev_hash", "hash")
EVENTS_FILE = "events.jsonl"
AUDIO_DIR = "audio"


def canonical(obj: Any) -> bytes:
    """The one byte encoding used for hashing and for the lines of ``events.jsonl``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 hex of a record's canonical bytes, ignoring any ``hash`` key it already has."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal(seq: int, time: str, t: float, type: str, data: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    """Build a complete record (with ``hash``) from its parts. ``data`` must already be JSON-plain."""
    record: dict[str, Any] = {"seq": seq, "time": time, "t": t, "type": type, "data": data,
                              "prev_hash": prev_hash}
    record["hash"] = record_hash(record)
    return record


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def schema_major(version: Any) -> int | None:
    """``"1.0"`` -> 1; None when the version is missing or not ``MAJOR.MINOR``."""
    if not isinstance(version, str):
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def to_jsonable(value: Any) -> Any:
    """A deep, JSON-plain copy of ``value`` that survives a dump/load round trip unchanged.

    Dict keys become strings, tuples/sets become lists, numpy scalars and arrays become Python
    numbers and lists, NaN/inf become None, paths and anything else become ``str(value)``. The copy
    is also the writer's snapshot: the caller may mutate its objects after handing them over.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return to_jsonable(value.tolist())
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic models
        return to_jsonable(value.model_dump(mode="json"))
    return str(value)


def find_audio_refs(value: Any) -> list[dict[str, Any]]:
    """Every audio reference (a dict with string ``file`` and ``sha256``) anywhere inside ``value``."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if isinstance(value.get("file"), str) and isinstance(value.get("sha256"), str):
            found.append(value)
        else:
            for v in value.values():
                found.extend(find_audio_refs(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(find_audio_refs(v))
    return found
