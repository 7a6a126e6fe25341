"""Salted hashes for the high-entropy secrets the coordinator issues (keys, credentials).

The secrets are 256-bit random strings, so one round of salted SHA-256 is as strong as a
slow KDF here and keeps authentication off the hot path's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    # Hex so the secret never contains the "_" that separates a credential's parts.
    return secrets.token_hex(32)


def new_id(nbytes: int = 6) -> str:
    return secrets.token_hex(nbytes)


def salted_hash(secret: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    salt = salt if salt is not None else secrets.token_bytes(16)
    return salt, hashlib.sha256(salt + secret.encode()).digest()


def matches(secret: str, salt: bytes, digest: bytes) -> bool:
    return hmac.compare_digest(salted_hash(secret, salt)[1], digest)


def split_credential(value: str, prefix: str) -> tuple[str, str] | None:
    """`<prefix><id>_<secret>` -> (id, secret), or None when malformed."""
    if not value.startswith(prefix):
        return None
    ident, sep, secret = value[len(prefix) :].partition("_")
    if not sep or not ident or not secret:
        return None
    return ident, secret
