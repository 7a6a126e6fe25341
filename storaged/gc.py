"""Garbage collection: reclaim blobs that no version of any org references.

A blob is kept while it is referenced by a committed version's manifest, or was touched
(uploaded, reported present by FindMissing, fetched as a manifest) within the grace
period: an upload in progress or a job that just resolved its inputs still needs it, or
pinned by a live hold (see Catalog.hold). A
blob being written right now is never deleted (BlobStore.reclaim checks that).

Deleting a packed blob only tombstones it; the compaction step at the end rewrites packs
that are mostly dead. It moves live blobs, never drops one, so it needs no grace rules.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from storaged.packs import MIN_LIVE_FRACTION
from storaged.store import BlobStore

log = logging.getLogger(__name__)


@dataclass
class GcStats:
    blobs_removed: int = 0
    orphans_removed: int = 0
    partials_removed: int = 0
    packs_rewritten: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0


async def collect_garbage(
    store: BlobStore, grace_seconds: float, min_live_fraction: float = MIN_LIVE_FRACTION
) -> GcStats:
    meta = store.meta
    cutoff = time.time() - grace_seconds
    stats = GcStats()
    # Held versions (a pending or running job's mounts) are roots even if their version
    # row were gone: a job that resolved them must find every blob.
    roots = (
        await meta.live_manifests()
        | await meta.recent_manifests(cutoff)
        | await meta.held_manifests()
    )
    referenced = set(roots)
    for digest in roots:
        manifest = await store.load_manifest(digest)
        referenced.update(e.digest for e in manifest.entries)
    for digest in await meta.stale_blobs(cutoff):
        if digest not in referenced and await store.reclaim(digest, cutoff):
            stats.blobs_removed += 1
    # Files without a row: a crash between rename and the metadata insert.
    known = await meta.all_blobs()
    on_disk = await store.run(lambda: list(store.backend.iter_blobs()))
    busy = store.inflight()
    for digest, mtime in on_disk:
        if digest not in known and digest not in busy and mtime < cutoff:
            await store.run(store.backend.delete, digest)
            stats.orphans_removed += 1
    stats.partials_removed = await store.run(store.backend.drop_partials_older_than, cutoff)
    stats.partials_removed += await store.run(store.backend.drop_temps_older_than, cutoff)
    compacted = await store.run(store.backend.compact, min_live_fraction)
    stats.packs_rewritten = compacted.packs_rewritten
    stats.packs_deleted = compacted.packs_deleted
    stats.bytes_freed = compacted.bytes_freed
    log.info("gc: %s", stats)
    return stats
