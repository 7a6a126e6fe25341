"""Pushing a tree to storaged: only the blobs the server lacks, then its manifest.

One implementation for every client that uploads a tree (c3d's deploy and local datasets,
`c3ctl data cp`, the push benchmark). Digests known to be on a server are remembered per
server identity (in memory, in front of the hash index's table) so an unchanged tree costs
no find-missing call at all; when the server says otherwise (it collected them), they are
forgotten and sent.

Files the hash index cannot vouch for are read once: they are hashed in groups of a few
MiB on the thread pool, each group asks the server what it lacks, and the small new ones
are compressed and sent from the bytes already in memory while later groups are being
hashed (the two cores of a laptop then hash, compress and send at the same time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from c3 import manifest as mf
from c3.errors import FailedPrecondition, PermissionDenied
from c3.storage.batching import batches, task_group
from c3.storage.client import LocalBlob, StorageClient
from c3.storage.hashindex import Hashed, HashIndex, HashStats, entries_for, hash_files
from c3.storage.wire import SMALL_BLOB_MAX
from c3.v1 import common_pb2
from c3.workspace import WorkspaceFile

# path -> (digest, size, executable, stat fingerprint)
FileInfo = tuple[str, int, bool, int]
# (digest, size): what sending a file's blob needs.
_Blob = tuple[str, int]
Progress = Callable[[int, int], None]
# Files to hash are read in groups of about this many bytes (or this many files): one
# thread-pool task, one find-missing call and one or two upload batches per group.
GROUP_BYTES = 4 << 20
GROUP_FILES = 1000
# Groups in flight at once; bounds the memory holding read, not yet sent, content.
GROUPS_IN_FLIGHT = 6


def server_identity(storage_address: str, api_key: str) -> str:
    """Key of the known-present cache: one store as seen by one credential (orgs differ)."""
    return f"{storage_address}|{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


@dataclass
class TreePush:
    """What a push did: the manifest's digest and what travelled."""

    digest: str
    blobs_new: int = 0
    bytes_sent: int = 0
    bytes_total: int = 0
    # False when the server confirmed it already had the manifest (nothing was uploaded).
    manifest_sent: bool = False


@dataclass
class _Tally:
    """Progress over the bytes a push has to read or send, reported as they are done."""

    callback: Progress | None
    total: int
    done: int = 0

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)


class _IndexWriter:
    """Index rows and known-present digests from a pipeline's groups, written in the
    background in batches: a group never waits for SQLite."""

    BATCH = 2000

    def __init__(self, hashes: HashIndex, root_key: str, hashed_at: int, server_key: str) -> None:
        self._hashes, self._root_key, self._hashed_at = hashes, root_key, hashed_at
        self._server_key = server_key
        self._rows: list[tuple[str, os.stat_result, str]] = []
        self._present: set[str] = set()
        self._writing: asyncio.Task[None] | None = None

    def add(
        self, rows: Sequence[tuple[str, os.stat_result, str]] = (), present: Iterable[str] = ()
    ) -> None:
        self._rows.extend(rows)
        self._present.update(present)
        idle = self._writing is None or self._writing.done()
        if idle and len(self._rows) + len(self._present) >= self.BATCH:
            if self._writing is not None:
                self._writing.result()  # a failed write fails the push
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        rows, self._rows = self._rows, []
        present, self._present = self._present, set()
        await self._hashes.remember(self._root_key, rows, self._hashed_at)
        await self._hashes.mark_present(self._server_key, present)

    async def close(self) -> None:
        """Write what is left (after every group is done)."""
        if self._writing is not None:
            await self._writing
        await self._write()


@dataclass
class _Pipeline:
    """State shared by the groups of one hashing pipeline."""

    root: Path
    index: _IndexWriter
    storage: StorageClient
    server_key: str
    present: set[str]
    result: TreePush
    stats: HashStats
    tally: _Tally
    digests: dict[str, str]
    # Digests some group is sending now: another group holding the same content skips it.
    claimed: set[str] = field(default_factory=set)
    groups_left: int = 0
    all_hashed: asyncio.Event = field(default_factory=asyncio.Event)


def _groups(
    misses: Sequence[tuple[str, os.stat_result]],
) -> list[list[tuple[str, os.stat_result]]]:
    """Large files alone and first (their streams bound the total time), then the small
    ones in bounded groups, in scan order."""
    large = [[f] for f in misses if f[1].st_size > SMALL_BLOB_MAX]
    small = [f for f in misses if f[1].st_size <= SMALL_BLOB_MAX]
    return large + batches(small, GROUP_BYTES, GROUP_FILES, lambda f: f[1].st_size)


async def _read_group(
    pipe: _Pipeline, group: list[tuple[str, os.stat_result]]
) -> list[Hashed]:
    """`hash_files` on the pool; a file deleted or unreadable since the scan is named in one
    clear error (a user's to fix, not a bug)."""
    try:
        return await pipe.storage.run(hash_files, pipe.root, group, SMALL_BLOB_MAX)
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"{exc.filename}: deleted while it was being pushed; run the command again"
        ) from None
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot read {exc.filename or pipe.root}: {exc.strerror or exc}; fix its"
            " permissions or leave it out with .c3ignore"
        ) from None
    except OSError as exc:  # e.g. replaced by a directory mid-push, or an I/O error
        raise FailedPrecondition(
            f"cannot read {exc.filename or pipe.root}: {exc.strerror or exc}"
        ) from None


class TreePusher:
    def __init__(self, hashes: HashIndex) -> None:
        self.hashes = hashes
        self._present: dict[str, set[str]] = {}

    async def push_files(
        self,
        root: Path,
        files: Sequence[WorkspaceFile] | Sequence[tuple[str, object]],
        storage: StorageClient,
        server_key: str,
        progress: Progress | None = None,
    ) -> tuple[TreePush, HashStats]:
        """Hash `files` (through the index: unchanged ones are not read) and push what the
        server lacks, then the manifest. Files to hash are read once for both."""
        pairs: list[tuple[str, os.stat_result]] = [
            (f.path, f.stat) if isinstance(f, WorkspaceFile) else f  # type: ignore[misc]
            for f in files
        ]
        found = await self.hashes.lookup(root, pairs)
        stats = HashStats(files_scanned=len(pairs), files_hashed=len(found.misses))
        result = TreePush(digest="", bytes_total=sum(st.st_size for _, st in pairs))
        present = self._present.setdefault(server_key, set())
        sizes = {rel: st.st_size for rel, st in pairs}
        known = {rel: (d, sizes[rel]) for rel, d in found.digests.items()}
        tally = _Tally(progress, sum(st.st_size for _, st in found.misses))
        index = _IndexWriter(self.hashes, found.root_key, time.time_ns(), server_key)
        pipe = _Pipeline(
            root, index, storage, server_key, present, result, stats, tally, found.digests
        )
        slots = asyncio.Semaphore(GROUPS_IN_FLIGHT)
        groups = _groups(found.misses)
        pipe.groups_left = len(groups)
        if not groups:
            pipe.all_hashed.set()
        try:
            async with task_group() as tg:
                tg.create_task(self._send(root, known, storage, server_key, result, tally))
                for group in groups:
                    tg.create_task(self._hash_and_send(pipe, group, slots, tg))
                # Built while the last blobs are still being sent.
                manifest = tg.create_task(self._build_manifest(pipe, pairs))
        except BaseException:
            # What the finished groups learned stays true: keep it for the next attempt.
            with contextlib.suppress(Exception):
                await index.close()
            raise
        await index.close()
        tree, digest = manifest.result()
        by_path = {rel: (d, sizes[rel]) for rel, d in pipe.digests.items()}
        await self._push_manifest(root, tree, by_path, storage, server_key, result, digest)
        return result, stats

    @staticmethod
    async def _build_manifest(
        pipe: _Pipeline, pairs: Sequence[tuple[str, os.stat_result]]
    ) -> tuple[common_pb2.Manifest, str]:
        """The manifest and its digest, once every file has its digest."""
        await pipe.all_hashed.wait()

        def build() -> tuple[common_pb2.Manifest, str]:
            tree = mf.build(entries_for(pairs, pipe.digests))
            return tree, mf.digest_of(tree)

        return await asyncio.to_thread(build)

    async def _hash_and_send(
        self,
        pipe: _Pipeline,
        group: list[tuple[str, os.stat_result]],
        slots: asyncio.Semaphore,
        tg: asyncio.TaskGroup,
    ) -> None:
        """Hash one group, keeping small files' bytes, and record the digests; send what
        the server lacks. A large file goes on as its own stream, so its slot is free for
        the next group."""
        async with slots:
            hashed = await _read_group(pipe, group)
            rows = []
            for (rel, st), h in zip(group, hashed, strict=True):
                if h.size != st.st_size:
                    # Its manifest entry would name content of another length.
                    raise FailedPrecondition(
                        f"{pipe.root / rel} changed while it was being pushed ({st.st_size}"
                        f" bytes when scanned, {h.size} when read); run the command again"
                    )
                pipe.digests[rel] = h.digest
                pipe.stats.bytes_hashed += h.size
                if h.stable:
                    rows.append((rel, st, h.digest))
            pipe.index.add(rows)
            pipe.groups_left -= 1
            if not pipe.groups_left:
                pipe.all_hashed.set()
            present, claimed = pipe.present, pipe.claimed
            digests = {h.digest for h in hashed}
            unknown = list(digests - present - claimed)
            if unknown:
                present |= await self.hashes.known_present(pipe.server_key, unknown)
                unknown = [d for d in unknown if d not in present and d not in claimed]
            missing = await pipe.storage.find_missing(unknown) if unknown else set()
            elsewhere = digests & claimed  # being sent by another group
            claimed |= missing
            loaded: dict[str, bytes] = {}
            streams: dict[str, LocalBlob] = {}
            for (rel, _), h in zip(group, hashed, strict=True):
                if h.digest not in missing or h.digest in loaded or h.digest in streams:
                    continue
                if h.data is not None:
                    loaded[h.digest] = h.data
                else:
                    streams[h.digest] = LocalBlob(pipe.root / rel, h.digest, h.size)
            if loaded:
                sent = await pipe.storage.put_loaded(list(loaded.items()))
                pipe.result.bytes_sent += sent
                pipe.result.blobs_new += len(loaded)
            # On the server now: found there, or just sent (not what is still to stream).
            done = digests - streams.keys() - elsewhere
            del hashed, loaded
            if unknown:
                pipe.index.add(present=done.intersection(unknown))
            present |= done
            for blob in streams.values():
                tg.create_task(self._stream(pipe, blob))
            # Streams count their own bytes as they finish.
            pipe.tally.add(
                sum(st.st_size for _, st in group) - sum(b.size for b in streams.values())
            )

    async def _stream(self, pipe: _Pipeline, blob: LocalBlob) -> None:
        sent = await pipe.storage.push_large_file(blob)
        pipe.result.bytes_sent += sent
        pipe.result.blobs_new += 1
        pipe.index.add(present=[blob.digest])
        pipe.present.add(blob.digest)
        pipe.tally.add(blob.size)

    async def push_tree(
        self,
        root: Path,
        tree: common_pb2.Manifest,
        files: Mapping[str, FileInfo],
        storage: StorageClient,
        server_key: str,
        progress: Progress | None = None,
    ) -> TreePush:
        """Push the blobs of `tree` (whose entries `files` describes) the server lacks, then
        its manifest."""
        result = TreePush(digest="", bytes_total=sum(i[1] for i in files.values()))
        blobs = {rel: (info[0], info[1]) for rel, info in files.items()}
        await self._send(root, blobs, storage, server_key, result, _Tally(progress, 0))
        await self._push_manifest(root, tree, blobs, storage, server_key, result)
        return result

    async def _push_manifest(
        self,
        root: Path,
        tree: common_pb2.Manifest,
        files: Mapping[str, _Blob],
        storage: StorageClient,
        server_key: str,
        result: TreePush,
        digest: str | None = None,
    ) -> None:
        """Store the manifest. One known present is only confirmed (a find-missing of one
        digest), so an unchanged tree moves no bytes; anything the server no longer has is
        forgotten here and sent again."""
        present = self._present.setdefault(server_key, set())
        if digest is None:
            digest = await asyncio.to_thread(mf.digest_of, tree)
        if digest in present and not await storage.find_missing([digest]):
            result.digest = digest
            return
        result.digest, missing = await storage.store_manifest(tree)
        result.manifest_sent = True
        if missing:
            lost = set(missing)
            present.difference_update(lost)
            await self.hashes.forget_present(server_key, lost)
            again = {p: i for p, i in files.items() if i[0] in lost}
            await self._send(root, again, storage, server_key, result, _Tally(None, 0))
            _, missing = await storage.store_manifest(tree)
            if missing:
                raise FailedPrecondition(
                    f"storage still lacks {len(missing)} blobs of {root} after re-uploading them"
                )
        present.add(result.digest)
        await self.hashes.mark_present(server_key, [result.digest])

    async def _send(
        self,
        root: Path,
        files: Mapping[str, _Blob],
        storage: StorageClient,
        server_key: str,
        result: TreePush,
        tally: _Tally,
    ) -> None:
        """Upload the blobs of files whose digests are known, unless known present; the
        bytes to send join `tally`'s total."""
        present = self._present.setdefault(server_key, set())
        unknown = {digest for digest, _ in files.values()} - present
        if unknown:
            present |= await self.hashes.known_present(server_key, unknown)
        candidates: dict[str, LocalBlob] = {}
        for path, (digest, size) in files.items():
            if digest not in present and digest not in candidates:
                candidates[digest] = LocalBlob(root / path, digest, size)
        if not candidates:
            return
        to_send = sum(b.size for b in candidates.values())
        tally.total += to_send
        reported = 0

        def progress(done: int, _total: int) -> None:
            nonlocal reported
            tally.add(done - reported)
            reported = done

        pushed = await storage.push_files(list(candidates.values()), progress=progress)
        tally.add(to_send - reported)  # blobs the server turned out to have count as done too
        result.blobs_new += pushed.blobs_new
        result.bytes_sent += pushed.bytes_sent
        await self.hashes.mark_present(server_key, candidates)
        present.update(candidates)
