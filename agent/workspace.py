"""Materialising what a job reads: its workspace and its datasets, from storaged.

Blobs come through the shared LRU blob cache, so a redeploy with one changed file
fetches one blob. A dataset (or an earlier job's artifacts) is materialised once per
exact manifest and then shared read-only by every job that mounts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.sandbox import ReadOnlyMount, check_mount_target
from agent.warmtree import Record, WarmTrees, stamp_written
from c3.errors import C3Error, InvalidArgument
from c3.manifest import EMPTY_DIGEST, check_digest, check_relative_path
from c3.storage.blobcache import BlobCache
from c3.storage.client import StorageClient
from c3.v1 import common_pb2

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".c3-complete"


@dataclass(frozen=True)
class FetchStats:
    files: int
    bytes_fetched: int
    # Entries fetched from storaged straight into the workspace, to be added to the blob
    # cache once the script runs (see `cache_fetched`).
    fetched: tuple[common_pb2.ManifestEntry, ...] = ()
    records: dict[str, Record] = field(default_factory=dict)  # for WarmTrees.keep


def _copy_cached(entries: list[common_pb2.ManifestEntry], dest: Path, cache: BlobCache
                 ) -> list[common_pb2.ManifestEntry]:
    """Copy every cached blob into the fresh `dest` in one pass (one thread hop for the
    whole tree, not one per file); returns the entries still missing. `dest` is new and
    only this function creates anything in it, so no symlink can be met on the way."""
    missing = []
    made: set[Path] = set()
    for entry in entries:
        check_relative_path(entry.path)
        if entry.digest == EMPTY_DIGEST or not cache.has(entry.digest):
            missing.append(entry)
            continue
        target = dest / entry.path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        cache.link_into(entry.digest, target, entry.executable, writable=True)
    return missing


def _reuse_and_copy(manifest: common_pb2.Manifest, dest: Path, cache: BlobCache,
                    warm: WarmTrees | None, owner: tuple[str, str]
                    ) -> tuple[list[common_pb2.ManifestEntry], list[common_pb2.ManifestEntry],
                               dict[str, Record]]:
    """One thread hop: the kept tree reused, cached blobs copied. Returns (entries
    written or still to fetch, entries still to fetch, records of kept files)."""
    kept: dict[str, Record] = {}
    if warm is not None:
        todo, kept = warm.take(*owner, manifest, dest)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        todo = list(manifest.entries)
    return todo, _copy_cached(todo, dest, cache), kept


async def fetch_workspace(client: StorageClient, manifest_digest: str, dest: Path,
                          cache: BlobCache, warm: WarmTrees | None = None,
                          owner: tuple[str, str] = ("", "")) -> FetchStats:
    """The workspace at `dest`: the project's previous tree reused where unchanged
    (`warm`, keyed by `owner` = (org, project)), cached blobs copied, the rest fetched
    (verified) straight into place. New blobs reach the cache later, off the job's startup
    path, because the cache makes each blob durable (fsync) and that would dominate."""
    check_digest(manifest_digest)
    # Checked against its digest and validated (paths, order) by the client.
    manifest = await client.get_manifest(manifest_digest)
    todo, missing, kept = await asyncio.to_thread(_reuse_and_copy, manifest, dest, cache,
                                                  warm, owner)
    fetched = 0
    if missing:
        fetched = await client.download_tree(common_pb2.Manifest(entries=missing), dest)
    records = {**kept, **await asyncio.to_thread(stamp_written, dest, todo)}
    return FetchStats(len(manifest.entries), fetched,
                      tuple(e for e in missing if e.digest != EMPTY_DIGEST), records)


class Foreground:
    """Job startups in progress. Background caching waits while any is: every blob it adds
    is copied and fsynced, and that disk traffic would slow the startup a user waits on
    (a first deploy of another project right after one of 2,000 files, say)."""

    def __init__(self) -> None:
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


async def cache_fetched(stats: FetchStats, where: Callable[[], Path | None],
                        cache: BlobCache, foreground: Foreground | None = None) -> None:
    """Add freshly fetched workspace files to the blob cache (run it while the script
    runs), pausing while another job starts. Each file is re-hashed, so one the job
    already changed is skipped."""
    for entry in stats.fetched:
        if foreground is not None:
            await foreground.idle()
        if cache.has(entry.digest):
            continue
        workspace = where()  # the tree moves when it is kept for the next job
        if workspace is None:
            return
        try:
            fd = await asyncio.to_thread(_open_fetched, workspace / entry.path, entry.size)
        except OSError:
            continue  # changed, replaced or removed by the job, or the job dir is gone
        try:
            # Through the descriptor: the job (running meanwhile) cannot swap the file for
            # a symlink to the host's /dev/zero or a FIFO between the check and the read.
            await cache.add_file(Path(f"/proc/self/fd/{fd}"), entry.digest)
        except (OSError, C3Error):
            continue
        finally:
            os.close(fd)


def _open_fetched(path: Path, size: int) -> int:
    """An fd of `path` if it is still the regular file of `size` bytes that was fetched
    (never following a symlink, never blocking on a FIFO); raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        os.close(fd)
        raise OSError(f"{path} is no longer the file that was fetched")
    return fd


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
