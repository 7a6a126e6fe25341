"""Which blobs a scoped token (a job's) may read.

A client token reads every blob its org references. A job token names the manifests it
may read (workspace, mounted versions) and path prefixes (its own /jobs/<id>/, mounted
datasets); it may read only those manifests, their entries and the blobs of versions
under those prefixes. The set is computed once per token and kept in a bounded LRU:
an agent fetching a 10,000-file workspace in 10 batches pays for it once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from c3.errors import C3Error, InvalidArgument, PermissionDenied
from c3.tokens import READ, TokenClaims
from storaged import namespace
from storaged.meta import Version
from storaged.store import BlobStore

CACHE_TOKENS = 256
# A digest outside the cached set triggers one recomputation at most this often per
# token (its own /jobs/<id> may gain versions while it runs), never per refused request.
REFRESH_AFTER_SECONDS = 5.0


def is_scoped(claims: TokenClaims) -> bool:
    return bool(claims.read_manifests) or not claims.allows(READ, "/")


@dataclass
class _Entry:
    allowed: frozenset[str]
    computed_at: float


class BlobScope:
    def __init__(self, store: BlobStore, max_tokens: int = CACHE_TOKENS) -> None:
        self._store = store
        self._max = max_tokens
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    async def require(self, token: str, claims: TokenClaims, digests: Sequence[str]) -> None:
        """Raise PermissionDenied unless a scoped token may read every digest."""
        if not is_scoped(claims):
            return
        entry = self._cache.get(token)
        if entry is not None:
            self._cache.move_to_end(token)
        outside = entry is None or any(d not in entry.allowed for d in digests)
        if outside and (entry is None or time.monotonic() - entry.computed_at > REFRESH_AFTER_SECONDS):
            entry = _Entry(await self._allowed(claims), time.monotonic())
            self._cache[token] = entry
            self._cache.move_to_end(token)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        assert entry is not None
        denied = [d for d in digests if d not in entry.allowed]
        if denied:
            raise PermissionDenied(
                f"this token may not read blob {denied[0][:12]}: a job token reads only its"
                " workspace, its mounted versions and its own /jobs/<id>/"
            )

    async def _allowed(self, claims: TokenClaims) -> frozenset[str]:
        meta, org = self._store.meta, claims.org_id
        manifests = set(await meta.referenced_by_org(org, list(claims.read_manifests)))
        for version in await self._versions_under(org, claims.read_prefixes):
            manifests.add(version.manifest)
        allowed = set(manifests)
        for digest in manifests:
            try:
                manifest = await self._store.load_manifest(digest)
            except C3Error:  # a named digest that is no manifest grants only itself
                continue
            allowed.update(e.digest for e in manifest.entries)
        return frozenset(allowed)

    async def _versions_under(self, org: str, prefixes: Sequence[str]) -> list[Version]:
        meta = self._store.meta
        found: list[Version] = []
        for prefix in prefixes:
            base = prefix.rstrip("/")
            if not base:
                continue  # "/" is not scoped; never reached for a scoped token's blobs
            try:
                ns = namespace.parse(base, allow_version=False, allow_subpath=False)
            except InvalidArgument:  # a prefix that is no namespace path grants nothing
                continue
            if ns.canonical is not None:
                found += await meta.versions(org, ns.canonical)
            else:
                found += await meta.versions_like(org, base + "/%")
        return found
