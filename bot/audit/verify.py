"""Offline verification of a session's audit directory: the hash chain and every referenced audio file.

Policy for a session killed mid-write (documented in docs/audit-log.md): a last line without its
terminating newline is an *incomplete write*, not tampering. The verified prefix stands, ``ok`` stays
True and a warning says "last line incomplete (session was killed mid-write); N records before it
verified". A missing ``session.end`` is likewise a warning. Anything else that does not check out is
a problem and makes ``ok`` False; the first problem names the first bad line (number and seq) or file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bot.audit.chain import (
    AUDIO_DIR,
    EVENTS_FILE,
    GENESIS,
    RECORD_KEYS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    canonical,
    find_audio_refs,
    record_hash,
    schema_major,
    sha256_file,
)
from bot.audit.signing import SIG_FILE, Signer

MAX_PROBLEMS = 50


@dataclass
class VerifyResult:
    dir: Path
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: int = 0
    """Complete records read from events.jsonl (all of them verified when ``ok``)."""
    turns: int = 0
    """``turn`` summary records."""
    audio_files: int = 0
    """Distinct audio files referenced and found with the right SHA-256."""
    schema_version: str | None = None
    head: str | None = None
    """``hash`` of the last complete record: note it elsewhere to detect later truncation."""
    ended: bool = False
    """True when the log ends with ``session.end``."""
    forgotten_audio: int = 0
    """Audio files missing because a later ``privacy.forget`` record says they were deleted on request."""
    signing: dict[str, Any] | None = None
    """``session.start``'s ``signing`` (``{alg, id}``) when the log was written signed, else None."""
    signed: int = 0
    """Records whose signature was checked with the key given to :func:`verify` and is valid."""
    head_checked: bool = False
    """A kept head was given and the log ends exactly there."""

    def summary(self) -> str:
        """One line for humans: ``chain OK: ...`` or ``chain BROKEN: <first problem>``."""
        counts = f"{self.records} records, {self.turns} turns, {self.audio_files} audio files"
        if not self.ok:
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"chain BROKEN: {self.problems[0]}{more}"
        warn = f"; warning: {self.warnings[0]}" if self.warnings else ""
        extra = f", {self.signed} signatures valid" if self.signed else ""
        extra += ", ends at the kept head" if self.head_checked else ""
        return f"chain OK: {counts} verified{extra}{warn}"

    def __bool__(self) -> bool:
        return self.ok


def _where(line: int, seq: Any, type_: Any = None) -> str:
    inside = f"seq {seq}" if isinstance(seq, int) else "seq ?"
    if isinstance(type_, str):
        inside += f", {type_}"
    return f"line {line} ({inside})"


def verify(session_dir: str | Path, *, head: str | None = None, key: Signer | None = None) -> VerifyResult:
    """Check ``events.jsonl`` (seq from 0, prev_hash links, each hash) and every referenced audio file.

    ``head``: the head hash kept elsewhere (the full hash or at least its first 12 hex digits); the log
    must end exactly there, which detects cut-off last records. ``key``: the signing key (or Ed25519
    public key) from :mod:`bot.audit.signing`; every record must then carry a valid signature.
    """
    root = Path(session_dir)
    result = VerifyResult(dir=root)
    events = root / EVENTS_FILE

    def problem(text: str) -> None:
        result.ok = False
        if len(result.problems) < MAX_PROBLEMS:
            result.problems.append(text)
        elif len(result.problems) == MAX_PROBLEMS:
            result.problems.append("... further problems not listed")

    if not events.is_file():
        problem(f"{events}: not found (is {root} a voicebot audit session directory?)")
        return result
    raw = events.read_bytes()
    pieces = raw.split(b"\n")
    partial = pieces.pop()  # b"" when the file ends with a newline
    if not pieces:
        problem(f"{EVENTS_FILE}: no complete record (the session was killed while starting)"
                if partial else f"{EVENTS_FILE}: empty")
        return result

    # The schema decides how to read the rest, so it is checked first.
    try:
        first = json.loads(pieces[0].decode("utf-8"))
        version = first["data"]["schema_version"]
    except (ValueError, KeyError, TypeError):
        first, version = None, None
    if first is not None:
        result.schema_version = version if isinstance(version, str) else None
        major = schema_major(version)
        if major is None:
            problem(f"line 1 (seq 0): session.start has no valid schema_version (got {version!r})")
        elif major > SCHEMA_MAJOR:
            problem(f"schema version {major}.x is newer than this voicebot understands "
                    f"({SCHEMA_MAJOR}.x): upgrade voicebot")
            return result
        elif major < SCHEMA_MAJOR:
            problem(f"schema version {version} is older than any this voicebot understands ({SCHEMA_MAJOR}.x)")
            return result
        elif _minor(version) > _minor(SCHEMA_VERSION):
            result.warnings.append(f"schema version {version} is newer than {SCHEMA_VERSION}: "
                                   "fields added since may not be shown")

    referenced: dict[str, str | None] = {}  # file -> verified sha256, or None if bad
    forgotten = _forgotten_audio(pieces)  # file -> (sha256, line) deleted on request
    expected_seq = 0
    prev: str | None = GENESIS
    end_line: int | None = None
    end_data: dict[str, Any] | None = None
    chain: list[tuple[int, Any, Any, Any]] = []  # (line, seq, type, hash) of every complete record
    if isinstance(first, dict) and isinstance(first.get("data"), dict) and isinstance(first["data"].get("signing"), dict):
        result.signing = first["data"]["signing"]

    for index, line in enumerate(pieces):
        number = index + 1
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            problem(f"line {number} (seq {expected_seq} expected): not valid JSON: "
                    "the record was edited or corrupted" if line else
                    f"line {number}: empty line: the file was edited")
            expected_seq += 1
            prev = None
            continue
        if not isinstance(rec, dict) or set(rec) != set(RECORD_KEYS):
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            problem(f"line {number}: not an audit record (fields {keys}): the file was edited")
            expected_seq += 1
            prev = None
            continue
        seq, type_ = rec["seq"], rec["type"]
        where = _where(number, seq, type_)
        result.records += 1
        chain.append((number, seq, type_, rec["hash"]))
        if end_line is not None:
            problem(f"{where}: record after session.end (line {end_line}): the file was edited")
        if seq != expected_seq:
            problem(f"{where}: expected seq {expected_seq}: records were deleted, inserted or reordered")
        if prev is not None and rec["prev_hash"] != prev:
            link = "the chain start" if number == 1 else f"line {number - 1}"
            problem(f"{where}: prev_hash does not match the hash of {link}: "
                    "records were deleted, inserted or reordered")
        if record_hash(rec) != rec["hash"]:
            problem(f"{where}: hash mismatch: the record was edited after it was written")
        elif canonical(rec) != line:
            problem(f"{where}: not in canonical form: the line was edited")
        if number == 1 and type_ != "session.start":
            problem(f"{where}: the first record must be session.start")
        if type_ == "turn":
            result.turns += 1
        if type_ == "session.end":
            end_line, end_data = number, rec["data"] if isinstance(rec["data"], dict) else {}
        for ref in find_audio_refs(rec["data"]):
            if not _forgotten(root, ref, number, forgotten, referenced, result):
                _check_audio(root, ref, where, referenced, problem)
        expected_seq = seq + 1 if isinstance(seq, int) else expected_seq + 1
        prev = rec["hash"] if isinstance(rec["hash"], str) else None
        result.head = prev

    result.audio_files = sum(1 for sha in referenced.values() if sha is not None)
    result.ended = end_line is not None

    if partial:
        result.warnings.append(f"last line incomplete (session was killed mid-write); "
                               f"{result.records} records before it verified")
    if end_data is not None:
        said = end_data.get("turns")
        if isinstance(said, int) and said != result.turns:
            problem(f"line {end_line}: session.end says {said} turns but the log has {result.turns} "
                    "turn records: records were deleted or added")
    elif not partial:
        result.warnings.append(f"no session.end record: the session did not end cleanly (killed or "
                               f"crashed); {result.records} records verified")
    _check_stray_audio(root, referenced, result)
    _check_signatures(root, chain, key, result, problem)
    if head is not None:
        _check_head(head, chain, result, problem)
    _check_permissions(root, result)
    return result


def _check_head(kept: str, chain: list[tuple[int, Any, Any, Any]], result: VerifyResult, problem: Any) -> None:
    """The log must end at the head hash kept elsewhere: anything else means records were cut off or added."""
    want = kept.strip().lower()
    if len(want) < 12 or len(want) > 64 or any(c not in "0123456789abcdef" for c in want):
        problem(f"--head {kept!r} is not a head hash: give the 64 hex digits `audit verify` printed (or at "
                "least the first 12)")
        return
    if isinstance(result.head, str) and result.head.startswith(want):
        result.head_checked = True
        return
    now = (result.head or "none")[:16]
    for number, seq, type_, digest in chain:
        if isinstance(digest, str) and digest.startswith(want):
            problem(f"the log goes on after the kept head ({_where(number, seq, type_)}): "
                    f"{len(chain) - chain.index((number, seq, type_, digest)) - 1} records were added after it "
                    f"was kept (it now ends at {now}…)")
            return
    problem(f"the kept head {want[:16]}… is not in this log: its last records were cut off or it was "
            f"rewritten (it now ends at {now}…)")


def _check_signatures(root: Path, chain: list[tuple[int, Any, Any, Any]], key: Signer | None,
                      result: VerifyResult, problem: Any) -> None:
    """Every record of a signed log has a valid signature line in ``events.sig`` (checked with ``key``)."""
    declared = result.signing
    sig_path = root / SIG_FILE
    if declared is None:
        if key is not None:
            problem(f"the log is not signed but a signing key (id {key.key_id}) was given: it was written "
                    "without audit.key_env, or rewritten by someone without the key")
        elif sig_path.exists():
            result.warnings.append(f"{SIG_FILE} present but session.start declares no signing: ignored")
        return
    alg, key_id = declared.get("alg"), declared.get("id")
    sigs: dict[Any, dict[str, Any]] = {}
    try:
        raw = sig_path.read_bytes()
    except OSError:
        raw = b""
    for line in raw.split(b"\n"):
        try:
            item = json.loads(line.decode("utf-8")) if line else None
        except (UnicodeDecodeError, ValueError):
            item = None
        if isinstance(item, dict) and isinstance(item.get("sig"), str):
            sigs[item.get("seq")] = item
    if key is None:
        unsigned = [c for c in chain if not (c[1] in sigs and sigs[c[1]].get("hash") == c[3])]
        if unsigned:
            number, seq, type_, _ = unsigned[0]
            problem(f"{_where(number, seq, type_)}: no signature in {SIG_FILE} for this record: it was added or "
                    "changed after it was written")
        result.warnings.append(f"signed ({alg}, key id {key_id}) but not checked: give the key (the variable "
                               "named by audit.key_env, or --public-key) to verify the signatures")
        return
    if key.alg != alg or key.key_id != key_id:
        problem(f"the log was signed with {alg} key id {key_id}, not with the key given ({key.alg} key id "
                f"{key.key_id})")
        return
    for number, seq, type_, digest in chain:
        item = sigs.get(seq)
        if item is None or item.get("hash") != digest or not isinstance(digest, str) \
                or not key.check(digest, item["sig"]):
            why = "no signature" if item is None else "invalid signature"
            problem(f"{_where(number, seq, type_)}: {why}: the record was forged, edited or re-sealed "
                    "without the signing key")
        else:
            result.signed += 1


def _check_permissions(root: Path, result: VerifyResult) -> None:
    """Warn when the session's folder or files can be read or changed by users other than the owner."""
    paths = [root, root / EVENTS_FILE, root / SIG_FILE]
    audio = root / AUDIO_DIR
    if audio.is_dir():
        paths += [audio, *sorted(audio.iterdir())]
    for path in paths:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            rel = "." if path == root else path.relative_to(root).as_posix()
            result.warnings.append(f"{rel}: readable by other users (mode {mode:03o}): the log holds transcripts "
                                   f"and audio; run chmod -R go-rwx {root}")


def _minor(version: Any) -> int:
    try:
        return int(str(version).split(".")[1])
    except (IndexError, ValueError):
        return 0


FORGET_TYPE = "privacy.forget"


def _forgotten_audio(pieces: list[bytes]) -> dict[str, tuple[str, int]]:
    """``{file: (sha256, line)}`` of the audio that ``privacy.forget`` records say was deleted on request
    (``data.deleted = [{path, sha256}, ...]``). Read ahead of the chain check, which still verifies those
    records like any other."""
    found: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(pieces, start=1):
        if FORGET_TYPE.encode() not in line:
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(rec, dict) or rec.get("type") != FORGET_TYPE or not isinstance(rec.get("data"), dict):
            continue
        for item in rec["data"].get("deleted") or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str) and isinstance(item.get("sha256"), str):
                found.setdefault(item["path"], (item["sha256"], number))
    return found


def _forgotten(root: Path, ref: dict[str, Any], line: int, forgotten: dict[str, tuple[str, int]],
               seen: dict[str, str | None], result: VerifyResult) -> bool:
    """True when the referenced file is missing and a *later* privacy.forget record names it with the same
    sha256: deleted on request, which is not tampering. Anything else is left to :func:`_check_audio`."""
    name = ref["file"]
    gone = forgotten.get(name)
    if gone is None or gone[0] != ref["sha256"] or gone[1] <= line or name in seen:
        return False
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or root.joinpath(*rel.parts).exists():
        return False
    seen[name] = None
    result.forgotten_audio += 1
    result.warnings.append(f"{name}: deleted on request (privacy.forget, line {gone[1]})")
    return True


def _check_audio(root: Path, ref: dict[str, Any], where: str, seen: dict[str, str | None], problem: Any) -> None:
    name = ref["file"]
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        problem(f"{name}: audio path outside the session directory (referenced by {where})")
        return
    if name in seen:
        if seen[name] is not None and seen[name] != ref["sha256"]:
            problem(f"{name}: referenced by {where} with a different sha256 than earlier")
        return
    path = root.joinpath(*rel.parts)
    if not path.is_file():
        seen[name] = None
        problem(f"{name}: missing (referenced by {where})")
        return
    actual = sha256_file(path)
    if actual != ref["sha256"]:
        seen[name] = None
        problem(f"{name}: sha256 mismatch: the file was replaced or edited (referenced by {where})")
        return
    seen[name] = actual


def _check_stray_audio(root: Path, referenced: dict[str, str | None], result: VerifyResult) -> None:
    audio = root / AUDIO_DIR
    if not audio.is_dir():
        return
    for path in sorted(audio.iterdir()):
        rel = f"{AUDIO_DIR}/{path.name}"
        if rel in referenced:
            continue
        if path.name.endswith(".tmp"):
            result.warnings.append(f"{rel}: incomplete audio file (session was killed while writing it)")
        else:
            result.warnings.append(f"{rel}: not referenced by any record (audio of a turn in flight "
                                   "when the session stopped, or a file added later)")
