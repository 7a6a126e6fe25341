"""Short-lived storage tokens: the coordinator signs, storaged verifies offline.

A token is `base64url(json claims) "." base64url(Ed25519 signature)`. Claims name the
org, the allowed operations and the namespace path prefixes; storaged needs only the
coordinator's public key to check one.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from c3.errors import PermissionDenied, Unauthenticated

READ = "read"
WRITE = "write"
DELETE = "delete"
ALL_OPERATIONS = (READ, WRITE, DELETE)
# Hold/Release of dataset versions. Only the coordinator signs it for itself; client and
# job tokens never carry it.
HOLD = "hold"


@dataclass(frozen=True)
class TokenClaims:
    org_id: str
    operations: tuple[str, ...]
    # Namespace prefixes such as "/" (whole org), "/jobs/j-123/". Read access to a blob
    # digest is granted through manifests reachable from these prefixes (or uploads).
    read_prefixes: tuple[str, ...] = ("/",)
    write_prefixes: tuple[str, ...] = ("/",)
    expires_at: float = 0.0
    subject: str = ""
    # Job tokens may read exactly these manifest digests (workspace, mounted versions).
    read_manifests: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, operation: str, path: str) -> bool:
        if operation not in self.operations:
            return False
        prefixes = self.read_prefixes if operation == READ else self.write_prefixes
        norm = path.rstrip("/") + "/"
        return any(norm.startswith(p if p.endswith("/") else p + "/") for p in prefixes)

    def require(self, operation: str, path: str) -> None:
        if not self.allows(operation, path):
            raise PermissionDenied(f"token does not allow {operation} on {path}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def load_or_create(cls, path: Path) -> TokenSigner:
        """Load the PEM private key at `path`, creating it (mode 0600) on first use."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, Ed25519PrivateKey)
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)
        return cls(key)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: TokenClaims) -> str:
        body = json.dumps(
            {
                "org": claims.org_id,
                "ops": list(claims.operations),
                "rp": list(claims.read_prefixes),
                "wp": list(claims.write_prefixes),
                "exp": claims.expires_at,
                "sub": claims.subject,
                "rm": list(claims.read_manifests),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return f"{_b64(body)}.{_b64(self._key.sign(body))}"


class TokenVerifier:
    """Checks tokens offline. Tokens whose signature and body were checked once are kept
    (the oldest make room): a push makes hundreds of calls with one token and each Ed25519
    check costs a fifth of a millisecond. Expiry is checked on every call."""

    MAX_REMEMBERED = 1024

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self._checked: dict[str, TokenClaims] = {}

    @classmethod
    def from_pem(cls, pem: bytes) -> TokenVerifier:
        key = serialization.load_pem_public_key(pem)
        assert isinstance(key, Ed25519PublicKey)
        return cls(key)

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        claims = self._checked.get(token)
        if claims is None:
            claims = self._check(token)
            if len(self._checked) >= self.MAX_REMEMBERED:
                del self._checked[next(iter(self._checked))]
            self._checked[token] = claims
        if claims.expires_at and claims.expires_at < (now if now is not None else time.time()):
            raise Unauthenticated("storage token expired")
        return claims

    def _check(self, token: str) -> TokenClaims:
        """The claims of a well-formed token with a valid signature (expired or not)."""
        if not token:
            raise Unauthenticated("missing storage token")
        try:
            body_b64, sig_b64 = token.split(".")
            body = _unb64(body_b64)
            self._key.verify(_unb64(sig_b64), body)
            raw = json.loads(body)
        except (ValueError, InvalidSignature) as exc:
            raise Unauthenticated("invalid storage token") from exc
        return TokenClaims(
            org_id=raw["org"],
            operations=tuple(raw["ops"]),
            read_prefixes=tuple(raw["rp"]),
            write_prefixes=tuple(raw["wp"]),
            expires_at=float(raw["exp"]),
            subject=raw.get("sub", ""),
            read_manifests=tuple(raw.get("rm", ())),
        )
