"""The real c3-storaged process: SIGKILL mid-upload, restart, every stored blob verifies."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sqlite3
from pathlib import Path

import pytest
import zstandard

from c3 import manifest as mf
from c3.errors import C3Error
from c3.storage import codec
from c3.storage.client import StorageClient
from c3.tokens import TokenSigner
from c3.v1 import common_pb2
from tests.harness.processes import start_storaged_process
from tests.harness.storage import MakeToken, random_bytes, write_file
from tests.harness.waiting import eventually

pytestmark = pytest.mark.faults


def _verify_packs(data_dir: Path) -> int:
    """Check every indexed packed blob against its digest (the index is read-only here: the
    running server owns it); returns the count."""
    index = data_dir / "packs" / "index.sqlite"
    if not index.exists():
        return 0
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT digest, pack, offset, length, compression FROM packed").fetchall()
    finally:
        db.close()
    for digest, pack, offset, length, compression in rows:
        with open(data_dir / "packs" / f"pack-{pack:08d}.pack", "rb") as f:
            f.seek(offset)
            data = f.read(length)
        assert len(data) == length, f"packed blob {digest} is cut short"
        if compression == codec.ZSTD:
            data = zstandard.ZstdDecompressor().decompress(data)
        assert hashlib.sha256(data).hexdigest() == digest, f"corrupt packed blob {digest}"
    return len(rows)


def _verify_store(data_dir: Path) -> int:
    """Check every blob on disk (own file or packed) against its digest; returns the count."""
    count = _verify_packs(data_dir)
    for path in (data_dir / "blobs").rglob("*.*"):
        if path.name.startswith("."):
            continue  # a temp file the kill left behind: never a blob (no name), GC drops it
        digest = path.parent.name + path.name.rsplit(".", 1)[0]
        data = path.read_bytes()
        if path.suffix == ".zst":
            data = zstandard.ZstdDecompressor().decompress(data)
        assert hashlib.sha256(data).hexdigest() == digest, f"corrupt blob {path}"
        count += 1
    return count


async def test_sigkill_mid_upload_leaves_a_consistent_store(
    tmp_path: Path, signer: TokenSigner, make_token: MakeToken
) -> None:
    pem = tmp_path / "coordinator.pub.pem"
    pem.write_bytes(signer.public_key_pem())
    data_dir, ready = tmp_path / "store", tmp_path / "ready"
    blobs = [write_file(tmp_path / "src" / f"big{i}.bin", random_bytes(6 << 20)) for i in range(6)]
    blobs += [
        write_file(tmp_path / "src" / f"small{i}.bin", random_bytes(30_000 + i)) for i in range(200)
    ]

    proc, address, _ = await start_storaged_process(data_dir, pem, ready)
    try:
        async with StorageClient(address, make_token()) as client:
            push = asyncio.create_task(client.push_files(blobs))
            uploads = data_dir / "uploads"
            await eventually(
                lambda: any(p.stat().st_size > 0 for p in uploads.iterdir()), 20, "a partial upload"
            )
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            with pytest.raises(C3Error):
                await push
        kept_partial = sum(p.stat().st_size for p in (data_dir / "uploads").iterdir())
        assert kept_partial > 0
        assert _verify_store(data_dir) < len(blobs)  # the kill really came mid-upload

        proc, address, _ = await start_storaged_process(data_dir, pem, ready)
        assert _verify_store(data_dir) >= 0
        async with StorageClient(address, make_token()) as client:
            stats = await client.push_files(blobs)
            total = sum(b.size for b in blobs)
            assert (
                stats.bytes_sent < total
            )  # what survived (blobs and partials) did not travel again
            assert await client.find_missing([b.digest for b in blobs]) == set()
            manifest = mf.build(
                common_pb2.ManifestEntry(path=b.path.name, digest=b.digest, size=b.size)
                for b in blobs
            )
            await client.commit("/datasets/after-crash", await client.put_manifest(manifest))
            out = tmp_path / "out"
            await client.download_tree(manifest, out)
            for b in blobs:
                assert (out / b.path.name).read_bytes() == b.path.read_bytes()
        assert _verify_store(data_dir) == len(blobs) + 1  # + the manifest
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0  # clean shutdown
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
