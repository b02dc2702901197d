"""Signatures over the audit chain: without the key, a forged or re-sealed record cannot be signed.

The hash chain alone makes edits *evident* but not impossible: whoever can write the directory can
recompute every hash. With ``audit.key_env`` naming an environment variable that holds a key, the writer
also signs each record's ``hash`` and appends ``{"seq", "hash", "sig"}`` to ``events.sig`` (one line
per record, written and fsynced *before* the record itself, so every record in ``events.jsonl`` has
its signature). ``session.start`` says how the log is signed (``signing: {alg, id}``).

Two kinds of key, told apart by the variable's value:

* ``hmac-sha256`` — any other string (at least 16 characters): ``sig = HMAC-SHA256(key, hash)``.
  Checking needs the same key, so the verifier must be trusted with it.
* ``ed25519`` — ``ed25519:<base64 of the 32-byte private seed>`` (``voicebot audit keygen`` makes
  one): ``sig = Ed25519(seed).sign(hash)``. Checking needs only the public key
  (``ed25519-pub:<base64>``), so reviewers cannot forge what they check.

``key_id`` is the first 16 hex of the SHA-256 of the public part (for HMAC, of a derivation of the key):
it tells which key signed without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Literal

from bot.errors import VoicebotError

SIG_FILE = "events.sig"
Algorithm = Literal["hmac-sha256", "ed25519"]
ED_PRIVATE = "ed25519:"
ED_PUBLIC = "ed25519-pub:"
MIN_HMAC_KEY = 16


@dataclass(frozen=True)
class Signer:
    """Signs record hashes. Build with :func:`load_key`; never printed or logged (repr hides the key)."""

    alg: Algorithm
    key_id: str
    _secret: bytes
    can_sign: bool = True

    def __repr__(self) -> str:
        return f"Signer(alg={self.alg!r}, key_id={self.key_id!r})"

    def sign(self, record_hash: str) -> str:
        if not self.can_sign:
            raise ValueError("a public key can only verify")
        if self.alg == "hmac-sha256":
            return hmac.new(self._secret, record_hash.encode("ascii"), hashlib.sha256).hexdigest()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self._secret).sign(record_hash.encode("ascii")).hex()

    def check(self, record_hash: str, sig: str) -> bool:
        if self.alg == "hmac-sha256":
            return hmac.compare_digest(self.sign(record_hash), sig)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self._public()).verify(bytes.fromhex(sig), record_hash.encode("ascii"))
        except (InvalidSignature, ValueError):
            return False
        return True

    def _public(self) -> bytes:
        if not self.can_sign:
            return self._secret
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return Ed25519PrivateKey.from_private_bytes(self._secret).public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)

    def public_key(self) -> str:
        """``ed25519-pub:<base64>`` for verifiers (Ed25519 only)."""
        if self.alg != "ed25519":
            raise ValueError("an HMAC key has no public part")
        return ED_PUBLIC + base64.b64encode(self._public()).decode()

    def describe(self) -> dict[str, str]:
        """What ``session.start`` records about the signing (never the key)."""
        return {"alg": self.alg, "id": self.key_id}


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VoicebotError(f"{what} is not valid base64: make one with `voicebot audit keygen`") from None
    if len(raw) != 32:
        raise VoicebotError(f"{what} must be 32 bytes (got {len(raw)}): make one with `voicebot audit keygen`")
    return raw


def load_key(value: str, where: str) -> Signer:
    """A signer (or, for ``ed25519-pub:``, a verify-only key) from a key string; ``where`` names its source."""
    value = value.strip()
    if value.startswith(ED_PUBLIC):
        pub = _b64(value[len(ED_PUBLIC):], f"the Ed25519 public key in {where}")
        return Signer("ed25519", hashlib.sha256(pub).hexdigest()[:16], pub, can_sign=False)
    if value.startswith(ED_PRIVATE):
        seed = _b64(value[len(ED_PRIVATE):], f"the Ed25519 key in {where}")
        signer = Signer("ed25519", "", seed)
        return Signer("ed25519", hashlib.sha256(signer._public()).hexdigest()[:16], seed)
    if len(value) < MIN_HMAC_KEY:
        raise VoicebotError(f"the audit signing key in {where} is shorter than {MIN_HMAC_KEY} characters: "
                            "use a long random string (e.g. `openssl rand -hex 32`) or `voicebot audit keygen`")
    secret = value.encode("utf-8")
    key_id = hmac.new(secret, b"voicebot audit key id", hashlib.sha256).hexdigest()[:16]
    return Signer("hmac-sha256", key_id, secret)


def signer_from_env(env_name: str) -> Signer | None:
    """The signer for ``audit.key_env``: None when it is empty (signing off); an error when the variable
    it names is not set (signing was asked for: never silently write an unsigned log)."""
    if not env_name:
        return None
    value = os.environ.get(env_name, "")
    if not value:
        raise VoicebotError(f"audit.key_env names ${env_name}, which is not set: export the signing key in it "
                            "(`voicebot audit keygen`), or set audit.key_env = \"\" to write unsigned logs")
    return load_key(value, f"${env_name}")


def new_ed25519_key() -> tuple[str, str]:
    """(private ``ed25519:…`` for the writer's env var, public ``ed25519-pub:…`` for verifiers)."""
    seed = os.urandom(32)
    signer = load_key(ED_PRIVATE + base64.b64encode(seed).decode(), "a new key")
    return ED_PRIVATE + base64.b64encode(seed).decode(), signer.public_key()
