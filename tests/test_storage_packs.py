"""Pack storage for small blobs: durable across restarts, torn tails ignored, compaction
keeps live blobs byte-identical and frees space, concurrent batches (with a compaction
running alongside) all land intact."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from c3 import manifest as mf
from c3.storage import codec
from c3.storage.client import StorageClient
from c3.v1 import common_pb2
from storaged.backend import LocalDiskBackend
from storaged.server import StoragedServer
from tests.harness.storage import text_bytes, write_file

pytestmark = pytest.mark.unit


Blob = tuple[str, int, bytes]


def _blobs(tag: str, n: int, size: int = 3000) -> list[Blob]:
    out = []
    for i in range(n):
        data = f"{tag}-{i}-".encode() + os.urandom(size)
        out.append((hashlib.sha256(data).hexdigest(), codec.NONE, data))
    return out


def _read(backend: LocalDiskBackend, digest: str) -> bytes:
    _, f = backend.open(digest)
    with f:
        return f.read()


def _pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "packs").glob("pack-*.pack"))


def test_small_blobs_are_packed_and_survive_a_restart(tmp_path: Path) -> None:
    backend = LocalDiskBackend(tmp_path)
    small = _blobs("s", 50)
    big = os.urandom(300 << 10)
    large = (hashlib.sha256(big).hexdigest(), codec.NONE, big)
    backend.put_many([*small, large])
    backend.close()

    backend = LocalDiskBackend(tmp_path)
    for digest, _, payload in [*small, large]:
        assert _read(backend, digest) == payload
    # Small ones share one pack file; the large one has a file of its own.
    blob_files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in blob_files] == [large[0][2:] + ".raw"]
    assert _pack_bytes(tmp_path) == sum(len(p) for _, _, p in small)
    assert {d for d, _ in backend.iter_blobs()} == {d for d, _, _ in [*small, large]}
    backend.close()


def test_a_torn_tail_is_never_visible_and_is_cut_at_restart(tmp_path: Path) -> None:
    backend = LocalDiskBackend(tmp_path)
    kept = _blobs("kept", 20)
    backend.put_many(kept)
    indexed_end = _pack_bytes(tmp_path)
    # A crash between the append and the index commit: bytes on disk, no index rows.
    torn = _blobs("torn", 5)
    pending = backend.packs.append(torn)
    assert backend.stat(torn[0][0]) is None
    backend.packs.release(pending)
    backend.close()
    # ...plus a half-written record past it.
    pack = next((tmp_path / "packs").glob("pack-*.pack"))
    os.chmod(pack, 0o644)
    with open(pack, "ab") as f:
        f.write(b"\x00garbage half record")
    assert _pack_bytes(tmp_path) > indexed_end

    backend = LocalDiskBackend(tmp_path)
    assert _pack_bytes(tmp_path) == indexed_end  # the tail is gone
    assert all(backend.stat(d) is None for d, _, _ in torn)
    for digest, _, payload in kept:
        assert _read(backend, digest) == payload
    # Writing goes on in a fresh pack; the torn blobs can be stored properly now.
    backend.put_many(torn)
    for digest, _, payload in [*kept, *torn]:
        assert _read(backend, digest) == payload
    backend.close()


def test_compaction_keeps_live_blobs_identical_and_frees_space(tmp_path: Path) -> None:
    backend = LocalDiskBackend(tmp_path, pack_roll_bytes=64 << 10)
    batches = [_blobs(f"b{i}", 15) for i in range(6)]  # ~45 KiB each: one pack per batch
    for batch in batches:
        backend.put_many(batch)
    before = _pack_bytes(tmp_path)
    assert len(list((tmp_path / "packs").glob("pack-*.pack"))) >= 5
    # Delete most of every batch, and every blob of one batch.
    live = [b for i, batch in enumerate(batches) for b in batch[:3] if i != 2]
    live_digests = {d for d, _, _ in live}
    for batch in batches:
        for digest, _, _ in batch:
            if digest not in live_digests:
                backend.delete(digest)

    stats = backend.compact(0.5)
    assert stats.packs_rewritten >= 4 and stats.packs_deleted >= 1, stats
    after = _pack_bytes(tmp_path)
    assert after == sum(len(p) for _, _, p in live)
    assert stats.bytes_freed == before - after
    for digest, _, payload in live:
        assert _read(backend, digest) == payload
    assert {d for d, _ in backend.iter_blobs()} == live_digests
    # Nothing left to do: a second round changes nothing.
    assert backend.compact(0.5).bytes_freed == 0
    backend.close()
    backend = LocalDiskBackend(tmp_path)  # and the switched index survives a restart
    for digest, _, payload in live:
        assert _read(backend, digest) == payload
    backend.close()


def test_concurrent_batches_with_compaction_alongside_all_land(tmp_path: Path) -> None:
    backend = LocalDiskBackend(tmp_path, pack_roll_bytes=32 << 10)
    doomed = _blobs("doomed", 40)
    backend.put_many(doomed)
    for digest, _, _ in doomed:
        backend.delete(digest)
    batches = [_blobs(f"c{i}", 25, size=1000 + 97 * i) for i in range(12)]
    stop = threading.Event()
    rounds = 0

    def compact_loop() -> None:
        nonlocal rounds
        while not stop.is_set():
            backend.compact(0.9)
            rounds += 1

    compactor = threading.Thread(target=compact_loop)
    compactor.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            for f in [pool.submit(backend.put_many, batch) for batch in batches]:
                f.result(timeout=60)
    finally:
        stop.set()
        compactor.join(timeout=60)
    assert rounds > 0
    backend.compact(0.9)
    for batch in batches:
        for digest, _, payload in batch:
            assert _read(backend, digest) == payload
    assert all(backend.stat(d) is None for d, _, _ in doomed)
    assert _pack_bytes(tmp_path) == sum(len(p) for b in batches for _, _, p in b)
    backend.close()


async def test_gc_compacts_packs_and_the_kept_dataset_still_downloads(
    client: StorageClient, server: StoragedServer, tmp_path: Path
) -> None:
    keep = [write_file(tmp_path / "k" / f"{i}.txt", text_bytes(20_000, i)) for i in range(10)]
    drop = [
        write_file(tmp_path / "d" / f"{i}.bin", os.urandom(20_000 + i)) for i in range(40)
    ]
    await client.push_files(keep + drop)

    def manifest(blobs: list) -> common_pb2.Manifest:  # type: ignore[type-arg]
        return mf.build(
            common_pb2.ManifestEntry(path=b.path.name, digest=b.digest, size=b.size)
            for b in blobs
        )

    await client.commit("/datasets/keep", await client.put_manifest(manifest(keep)))
    await client.commit("/datasets/drop", await client.put_manifest(manifest(drop)))
    store_dir = server.config.data_dir
    before = _pack_bytes(store_dir)
    # Within the grace period nothing is removed, so nothing is compacted either.
    stats = await server.collect_garbage()
    assert stats.blobs_removed == 0 and stats.bytes_freed == 0  # type: ignore[attr-defined]
    await client.remove("/datasets/drop", recursive=True)
    stats = await server.collect_garbage(grace_seconds=0)
    assert stats.blobs_removed == len(drop) + 1  # type: ignore[attr-defined]
    assert stats.bytes_freed > 800_000  # type: ignore[attr-defined]
    assert _pack_bytes(store_dir) < before - 800_000
    out = tmp_path / "out"
    await client.download_tree(manifest(keep), out)
    for b in keep:
        assert (out / b.path.name).read_bytes() == b.path.read_bytes()
    assert await client.find_missing([b.digest for b in drop]) == {b.digest for b in drop}
    # The dropped content can come back: stored again, readable again.
    await client.push_files(drop[:3])
    await client.download_tree(manifest(drop[:3]), tmp_path / "again")
    assert (tmp_path / "again" / drop[0].path.name).read_bytes() == drop[0].path.read_bytes()
