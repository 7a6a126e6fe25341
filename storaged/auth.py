"""Who may call each Storage method: the storage token operation it needs, and for the
namespace methods the request field naming the path it acts on.

Every method needs a valid token (signed by the coordinator, not expired) carrying the
operation; a namespace method's path must lie under the token's prefixes for it (as
written or in its canonical form: /projects/p/jobs/j and /jobs/j are the same data). What
a scoped (job) token may read among blobs and manifests needs the store and is checked by
the handlers with the `grant()` this table's rules put in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from c3.auth import PUBLIC_METHODS, Rule, principal
from c3.errors import PermissionDenied
from c3.grpctypes import Context
from c3.grpcutil import STORAGE_TOKEN, metadata_value
from c3.tokens import DELETE, HOLD, READ, WRITE, TokenClaims, TokenVerifier
from storaged import namespace


@dataclass(frozen=True)
class Grant:
    """The calling token and what it allows."""

    token: str
    claims: TokenClaims


# method -> (operation, request field holding the namespace path it applies to, or "")
PERMISSIONS: dict[str, tuple[str, str]] = {
    "/c3.v1.Storage/FindMissing": (WRITE, ""),
    "/c3.v1.Storage/PutBlobs": (WRITE, ""),
    "/c3.v1.Storage/GetBlobs": (READ, ""),
    "/c3.v1.Storage/PutBlobStream": (WRITE, ""),
    "/c3.v1.Storage/GetBlobStream": (READ, ""),
    "/c3.v1.Storage/UploadOffset": (WRITE, ""),
    "/c3.v1.Storage/PutManifest": (WRITE, ""),
    "/c3.v1.Storage/GetManifest": (READ, ""),
    "/c3.v1.Storage/Commit": (WRITE, "path"),
    "/c3.v1.Storage/Resolve": (READ, "ref"),
    "/c3.v1.Storage/List": (READ, "path"),
    "/c3.v1.Storage/Log": (READ, "path"),
    "/c3.v1.Storage/Remove": (DELETE, "path"),
    "/c3.v1.Storage/DiskUsage": (READ, "path"),
    "/c3.v1.Storage/Hold": (HOLD, ""),
    "/c3.v1.Storage/Release": (HOLD, ""),
}


def grant() -> Grant:
    """The token of the running handler's caller."""
    return principal(Grant)


def require_path(claims: TokenClaims, operation: str, path: str) -> None:
    ns = namespace.parse(path)
    if claims.allows(operation, ns.display) or (
        ns.canonical is not None and claims.allows(operation, ns.canonical)
    ):
        return
    raise PermissionDenied(f"token does not allow {operation} on {ns.display}")


def rules(verifier: TokenVerifier) -> Mapping[str, Rule]:
    def needs(operation: str, path_field: str) -> Rule:
        def rule(context: Context, method: str, request: Any) -> Grant:
            token = metadata_value(context, STORAGE_TOKEN)
            claims = verifier.verify(token)
            if path_field:
                require_path(claims, operation, getattr(request, path_field))
            elif operation not in claims.operations:
                raise PermissionDenied(f"storage token does not allow {operation}")
            return Grant(token, claims)

        return rule

    return {**PUBLIC_METHODS, **{m: needs(op, f) for m, (op, f) in PERMISSIONS.items()}}
