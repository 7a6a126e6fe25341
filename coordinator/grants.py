"""Every storage token the coordinator signs, and what each may do.

A client's token reads and writes its whole org; a job's reads its workspace, its mounted
versions and its own /jobs/<id>/ and writes only there; the coordinator's own tokens
(holds, usage) name one operation and live a minute. storaged checks them offline with the
coordinator's public key (c3/tokens.py).
"""

from __future__ import annotations

import time

from c3.tokens import ALL_OPERATIONS, READ, WRITE, TokenClaims, TokenSigner
from coordinator.model import Job

# A job token outlives its time limit by this much (upload of artifacts happens after).
_JOB_TOKEN_GRACE_S = 3600.0
_JOB_TOKEN_NO_LIMIT_S = 7 * 24 * 3600.0
# The coordinator's own tokens: one call's worth, re-signed when half used up.
_SERVICE_TOKEN_S = 60.0


class StorageGrants:
    def __init__(self, signer: TokenSigner, storage_address: str, client_ttl_s: float) -> None:
        self._signer = signer
        self.storage_address = storage_address
        self._client_ttl = client_ttl_s
        self._service: dict[tuple[str, str, str], tuple[str, float]] = {}

    def for_job(self, job: Job, now: float) -> str:
        limit = job.spec.time_limit_seconds
        ttl = limit + _JOB_TOKEN_GRACE_S if limit else _JOB_TOKEN_NO_LIMIT_S
        manifests = [job.spec.workspace_manifest_digest]
        manifests += [m.manifest_digest for m in job.spec.datasets if m.manifest_digest]
        read_paths = [f"/jobs/{job.id}/"]
        read_paths += [m.resolved_path for m in job.spec.datasets if m.resolved_path]
        return self._signer.sign(
            TokenClaims(
                org_id=job.org_id,
                operations=(READ, WRITE),
                read_prefixes=tuple(read_paths),
                write_prefixes=(f"/jobs/{job.id}/",),
                expires_at=now + ttl,
                subject=f"job:{job.id}",
                read_manifests=tuple(manifests),
            )
        )

    def for_client(
        self, org_id: str, key_id: str, operations: tuple[str, ...]
    ) -> tuple[str, float]:
        """A token for an API key's holder (c3ctl, c3d) and when it expires."""
        expires = time.time() + self._client_ttl
        token = self._signer.sign(
            TokenClaims(
                org_id=org_id,
                operations=operations or ALL_OPERATIONS,
                read_prefixes=("/",),
                write_prefixes=("/",),
                expires_at=expires,
                subject=f"key:{key_id}",
            )
        )
        return token, expires

    def for_service(self, org_id: str, operation: str, subject: str) -> str:
        """The coordinator's own token for one operation on an org (holds, usage)."""
        now = time.time()
        key = (org_id, operation, subject)
        cached = self._service.get(key)
        if cached is not None and cached[1] - now > _SERVICE_TOKEN_S / 2:
            return cached[0]
        expires = now + _SERVICE_TOKEN_S
        read = ("/",) if operation == READ else ()
        token = self._signer.sign(
            TokenClaims(
                org_id=org_id,
                operations=(operation,),
                read_prefixes=read,
                write_prefixes=(),
                expires_at=expires,
                subject=subject,
            )
        )
        self._service[key] = (token, expires)
        return token
