"""Materialising what a job reads: its workspace and its datasets, from storaged.

Blobs come through the shared LRU blob cache, so a redeploy with one changed file
fetches one blob. A dataset (or an earlier job's artifacts) is materialised once per
exact manifest and then shared read-only by every job that mounts it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent.sandbox import ReadOnlyMount, check_mount_target
from c3.blobcache import BlobCache
from c3.errors import InvalidArgument
from c3.manifest import check_digest
from c3.storage_client import StorageClient
from c3.v1 import common_pb2

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".c3-complete"


@dataclass(frozen=True)
class FetchStats:
    files: int
    bytes_fetched: int


async def fetch_workspace(client: StorageClient, manifest_digest: str, dest: Path,
                          cache: BlobCache) -> FetchStats:
    check_digest(manifest_digest)
    manifest = await client.get_manifest(manifest_digest)
    fetched = await client.download_tree(manifest, dest, cache=cache)
    return FetchStats(len(manifest.entries), fetched)


class DatasetCache:
    """Datasets by manifest digest under `root`, each built once even if two jobs ask."""

    def __init__(self, root: Path, blobs: BlobCache) -> None:
        self.root = root
        self.blobs = blobs
        self._locks: dict[str, asyncio.Lock] = {}

    async def materialise(self, client: StorageClient, mount: common_pb2.DatasetMount
                          ) -> ReadOnlyMount:
        target = check_mount_target(mount.mount)
        digest = mount.manifest_digest
        if not digest:
            raise InvalidArgument(
                f"dataset {mount.ref!r} has no resolved version; resubmit the job"
            )
        check_digest(digest)
        directory = self.root / digest
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if not (directory / COMPLETE_MARKER).exists():
                if directory.exists():
                    await asyncio.to_thread(shutil.rmtree, directory)
                tree = directory / "tree"
                tree.mkdir(parents=True)
                manifest = await client.get_manifest(digest)
                await client.download_tree(manifest, tree, cache=self.blobs, writable=False)
                (directory / COMPLETE_MARKER).touch()
                log.info("dataset %s (%s) materialised", mount.ref, digest[:12])
        return ReadOnlyMount(directory / "tree", target)
