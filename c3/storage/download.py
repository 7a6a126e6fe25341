"""Materialise a manifest into a directory: fetch what is not cached (batched small blobs,
streamed large ones), verify every digest, never write outside the destination."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from c3 import manifest as mf
from c3.errors import DataLoss
from c3.storage import codec
from c3.storage.batching import batches, run_all
from c3.storage.blobcache import BlobCache
from c3.storage.wire import BATCH_BYTES, SMALL_BLOB_MAX
from c3.v1 import common_pb2, storage_pb2

T = TypeVar("T")
# (target path, executable) for every entry that has one digest.
Targets = list[tuple[Path, bool]]
STREAMS = 2
BATCHES = 4
# Blobs of a GetBlobs reply verified and written per thread trip.
SETTLE_GROUP = 64


class BlobSource(Protocol):
    """What a download needs of the storage client: its blob reads and its thread pool."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def get_blobs(self, digests: Sequence[str]) -> AsyncIterator[storage_pb2.BlobData]: ...

    def get_blob_stream(
        self, digest: str, offset: int = 0
    ) -> AsyncIterator[storage_pb2.BlobChunk]: ...


def _plan(dest: Path, manifest: common_pb2.Manifest) -> dict[str, Targets]:
    """Check every path before anything is written; group entries by digest."""
    mf.validate(manifest)
    dest.mkdir(parents=True, exist_ok=True)
    plan: dict[str, Targets] = {}
    for e in manifest.entries:
        plan.setdefault(e.digest, []).append((mf.safe_join(dest, e.path), e.executable))
    return plan


def _mode(executable: bool) -> int:
    return 0o755 if executable else 0o644


def _install(tmp: Path, target: Path, executable: bool) -> None:
    os.chmod(tmp, _mode(executable))
    if target.is_symlink():  # appeared since the plan was made: refuse to write through it
        raise OSError(f"refusing to replace symlink {target}")
    os.replace(tmp, target)


def _tmp_beside(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.c3-{uuid.uuid4().hex[:8]}")


def _write_bytes(data: bytes, targets: Targets) -> None:
    for target, executable in targets:
        tmp = _tmp_beside(target)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            _install(tmp, target, executable)
        finally:
            tmp.unlink(missing_ok=True)


def _content(blob: storage_pb2.BlobData) -> bytes:
    """The blob's content, checked against its digest."""
    return codec.decompress(blob.digest, blob.size, blob.compression, blob.data)


def _write_blobs(placed: list[tuple[storage_pb2.BlobData, Targets]]) -> None:
    for blob, targets in placed:
        _write_bytes(_content(blob), targets)


def _cache_and_link_blobs(
    cache: BlobCache, placed: list[tuple[storage_pb2.BlobData, Targets]], writable: bool
) -> None:
    for blob, targets in placed:
        cache.add_bytes_now(blob.digest, _content(blob), verified=True)
        _link_all(cache, blob.digest, targets, writable)


def _place_file(tmp: Path, targets: Targets) -> None:
    """Move a downloaded temp file onto the first target, copy it to the others."""
    first, executable = targets[0]
    _install(tmp, first, executable)
    for target, exe in targets[1:]:
        other = _tmp_beside(target)
        try:
            shutil.copyfile(first, other)
            _install(other, target, exe)
        finally:
            other.unlink(missing_ok=True)


def _link_all(cache: BlobCache, digest: str, targets: Targets, writable: bool) -> None:
    for target, executable in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        cache.link_into(digest, target, executable, writable=writable)


async def download_tree(
    client: BlobSource,
    manifest: common_pb2.Manifest,
    dest: Path,
    *,
    cache: BlobCache | None,
    progress: Callable[[int, int], None] | None,
    writable: bool,
) -> int:
    plan = await client.run(_plan, dest, manifest)
    sizes = {e.digest: e.size for e in manifest.entries}
    # Cached and empty blobs first, before fetching can evict anything from the cache.
    if mf.EMPTY_DIGEST in plan:
        await client.run(_write_bytes, b"", plan.pop(mf.EMPTY_DIGEST))
    if cache is not None:
        for digest in [d for d in plan if cache.has(d)]:
            await client.run(_link_all, cache, digest, plan.pop(digest), writable)
    total = sum(sizes[d] for d in plan)
    done = fetched = 0

    def advance(raw: int, wire: int) -> None:
        nonlocal done, fetched
        done += raw
        fetched += wire
        if progress is not None:
            progress(done, total)

    batch_slots, stream_slots = asyncio.Semaphore(BATCHES), asyncio.Semaphore(STREAMS)

    async def settle(blobs: list[storage_pb2.BlobData]) -> None:
        # Verified and written (or cached and linked) in one thread trip for the group.
        placed = [(blob, plan[blob.digest]) for blob in blobs]
        if cache is None:
            await client.run(_write_blobs, placed)
        else:
            await client.run(_cache_and_link_blobs, cache, placed, writable)
        for blob in blobs:
            advance(blob.size, len(blob.data))

    async def fetch_batch(digests: list[str]) -> None:
        async with batch_slots:
            wanted = set(digests)
            arrived: list[storage_pb2.BlobData] = []
            async for blob in client.get_blobs(digests):
                if blob.digest not in wanted or blob.size != sizes[blob.digest]:
                    raise DataLoss(f"server sent unexpected blob {blob.digest[:12]}")
                wanted.discard(blob.digest)
                arrived.append(blob)
                if len(arrived) >= SETTLE_GROUP:
                    await settle(arrived)
                    arrived = []
            if arrived:
                await settle(arrived)
            if wanted:
                # A reply that leaves blobs out must not end as a tree with files missing.
                raise DataLoss(
                    f"server did not send {len(wanted)} of {len(digests)} requested blobs "
                    f"(e.g. {min(wanted)[:12]}); try again"
                )

    async def fetch_stream(digest: str) -> None:
        async with stream_slots:
            first_target = plan[digest][0][0]
            tmp = (
                cache.tmp_path()
                if cache is not None
                else await client.run(_tmp_beside, first_target)
            )
            try:
                wire = await _stream_to_file(client, digest, sizes[digest], tmp)
                if cache is not None:
                    await cache.add_file(tmp, digest, move=True, verified=True)
                    await client.run(_link_all, cache, digest, plan[digest], writable)
                else:
                    await client.run(_place_file, tmp, plan[digest])
            finally:
                tmp.unlink(missing_ok=True)
            advance(sizes[digest], wire)

    small = [d for d in plan if sizes[d] <= SMALL_BLOB_MAX]
    large = [d for d in plan if sizes[d] > SMALL_BLOB_MAX]
    jobs = [fetch_stream(d) for d in large]
    jobs += [fetch_batch(group) for group in batches(small, BATCH_BYTES, len(small), sizes.__getitem__)]
    await run_all(jobs)
    return fetched


def _open_write(path: Path) -> BinaryIO:
    return open(path, "wb")


async def _stream_to_file(client: BlobSource, digest: str, size: int, tmp: Path) -> int:
    """Stream a blob into `tmp`, verifying as it arrives; wire bytes received."""
    wire = 0
    f = await client.run(_open_write, tmp)
    try:
        verifier: codec.StreamVerifier | None = None
        async for chunk in client.get_blob_stream(digest):
            if verifier is None:
                if chunk.digest != digest or chunk.size != size:
                    raise DataLoss(f"server sent the wrong header for blob {digest[:12]}")
                verifier = codec.StreamVerifier(digest, size, chunk.compression, out=f)
            await client.run(verifier.update, chunk.data)
            wire += len(chunk.data)
        if verifier is None:
            raise DataLoss(f"empty stream for blob {digest[:12]}")
        await client.run(verifier.finish)
    finally:
        await client.run(f.close)
    return wire
