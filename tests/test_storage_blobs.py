"""Blob transfer against a real storaged: dedup, verification, resume, isolation, downloads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest

from c3 import grpcutil
from c3 import manifest as mf
from c3.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from c3.storage import codec
from c3.storage.blobcache import BlobCache
from c3.storage.client import LocalBlob, StorageClient
from c3.v1 import common_pb2, storage_pb2, storage_pb2_grpc
from storaged.server import StoragedServer
from tests.harness.storage import MakeToken, random_bytes, text_bytes, write_file

pytestmark = pytest.mark.unit


def _blob_files(server: StoragedServer) -> list[Path]:
    return [p for p in (server.config.data_dir / "blobs").rglob("*") if p.is_file()]


def _entries(
    blobs: dict[str, LocalBlob], executable: frozenset[str] = frozenset()
) -> common_pb2.Manifest:
    return mf.build(
        common_pb2.ManifestEntry(path=p, digest=b.digest, size=b.size, executable=p in executable)
        for p, b in blobs.items()
    )


async def test_second_push_sends_nothing_and_bytes_round_trip(
    client: StorageClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    blobs = {
        "a.txt": write_file(src / "a.txt", text_bytes(40_000)),
        "dir/b.bin": write_file(src / "dir/b.bin", random_bytes(3_000_000)),  # streamed
        "dir/c.txt": write_file(src / "dir/c.txt", text_bytes(5_000_000, seed=2)),  # streamed, zstd
        "empty": write_file(src / "empty", b""),
        "dup.txt": write_file(src / "dup.txt", text_bytes(40_000)),
    }
    first = await client.push_files(list(blobs.values()))
    assert first.blobs_new == 4  # a.txt and dup.txt are one blob
    assert 0 < first.bytes_sent < first.bytes_total  # text compressed on the wire
    second = await client.push_files(list(blobs.values()))
    assert (second.blobs_new, second.bytes_sent) == (0, 0)

    manifest = _entries(blobs, executable=frozenset({"a.txt"}))
    digest = await client.put_manifest(manifest)
    assert await client.get_manifest(digest) == manifest
    out = tmp_path / "out"
    fetched = await client.download_tree(manifest, out)
    assert fetched > 0
    for rel, blob in blobs.items():
        assert (out / rel).read_bytes() == blob.path.read_bytes()
    assert os.access(out / "a.txt", os.X_OK) and not os.access(out / "dup.txt", os.X_OK)


async def test_wrong_digest_and_corrupt_payload_are_rejected_and_nothing_kept(
    client: StorageClient, server: StoragedServer, make_token: MakeToken
) -> None:
    data = text_bytes(10_000)
    wrong = hashlib.sha256(b"something else").hexdigest()
    stub = storage_pb2_grpc.StorageStub(grpcutil.channel(server.address))
    md = grpcutil.storage_metadata(make_token())
    compression, payload = codec.compress(data)
    bad_batch = storage_pb2.PutBlobsRequest(
        blobs=[
            storage_pb2.BlobData(digest=mf.sha256_bytes(b"ok"), size=2, data=b"ok"),
            storage_pb2.BlobData(
                digest=wrong,
                size=len(data),
                compression=codec.Compression(compression),
                data=payload,
            ),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutBlobs(bad_batch, metadata=md)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "does not match its digest" in (err.value.details() or "")
    truncated = storage_pb2.BlobData(
        digest=mf.sha256_bytes(data),
        size=len(data),
        compression=codec.Compression(compression),
        data=payload[:-7],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutBlobs(storage_pb2.PutBlobsRequest(blobs=[truncated]), metadata=md)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    # A corrupt stream is refused at its last chunk, and leaves no partial behind.
    chunks = [
        storage_pb2.BlobChunk(
            digest=wrong,
            size=len(data),
            compression=codec.Compression(compression),
            data=payload,
            last=True,
        )
    ]

    async def gen():  # type: ignore[no-untyped-def]
        for c in chunks:
            yield c

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutBlobStream(gen(), metadata=md)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert _blob_files(server) == []
    assert list((server.config.data_dir / "uploads").iterdir()) == []
    assert await client.find_missing([wrong, mf.sha256_bytes(b"ok")]) == {
        wrong,
        mf.sha256_bytes(b"ok"),
    }


async def test_interrupted_stream_resumes_from_server_offset(
    client: StorageClient, server: StoragedServer, make_token: MakeToken, tmp_path: Path
) -> None:
    blob = write_file(tmp_path / "big.bin", random_bytes(5 * (1 << 20) + 123))
    from c3.storage.upload import LargeBlobReader

    reader = LargeBlobReader.for_file(blob.path, blob.digest, blob.size)
    reader.open()
    stub = storage_pb2_grpc.StorageStub(grpcutil.channel(server.address))
    md = grpcutil.storage_metadata(make_token())
    sent = 0

    async def first_three():  # type: ignore[no-untyped-def]
        nonlocal sent

        async def run(fn, *a):  # type: ignore[no-untyped-def]
            return fn(*a)

        async for message, _ in reader.messages(run, 0):
            chunk = storage_pb2.BlobChunk.FromString(message)
            if chunk.last or sent >= 3 << 20:
                return  # the connection "drops" before the end
            sent += len(chunk.data)
            yield chunk

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutBlobStream(first_three(), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reader.close()
    held = await stub.UploadOffset(
        storage_pb2.UploadOffsetRequest(
            digest=blob.digest, compression=storage_pb2.COMPRESSION_NONE
        ),
        metadata=md,
    )
    assert held.offset == sent == 3 << 20

    stats = await client.push_files([blob])
    assert stats.blobs_new == 1
    assert stats.bytes_sent == blob.size - sent  # only the rest travelled
    out = tmp_path / "out"
    await client.download_tree(_entries({"big.bin": blob}), out)
    assert (out / "big.bin").read_bytes() == blob.path.read_bytes()


async def test_file_changed_since_hashing_is_a_clear_error(
    client: StorageClient, tmp_path: Path
) -> None:
    small = write_file(tmp_path / "small.txt", b"original")
    large = write_file(tmp_path / "large.bin", random_bytes(2 << 20))
    small.path.write_bytes(b"edited!!")
    with pytest.raises(FailedPrecondition, match=r"small\.txt changed since it was hashed"):
        await client.push_files([small])
    large.path.write_bytes(random_bytes(2 << 20))
    with pytest.raises(FailedPrecondition, match=r"large\.bin changed since it was hashed"):
        await client.push_files([large])
    assert await client.find_missing([small.digest, large.digest]) == {small.digest, large.digest}


async def test_find_missing_and_reads_are_isolated_per_org(
    server: StoragedServer, make_token: MakeToken, tmp_path: Path
) -> None:
    data = text_bytes(50_000)
    blob = write_file(tmp_path / "f.txt", data)
    async with (
        StorageClient(server.address, make_token("org-a")) as a,
        StorageClient(server.address, make_token("org-b")) as b,
    ):
        await a.push_files([blob])
        assert await a.find_missing([blob.digest]) == set()
        # org B must not learn that org A has these bytes, nor read them.
        assert await b.find_missing([blob.digest]) == {blob.digest}
        with pytest.raises(NotFound):
            await b.download_tree(_entries({"f.txt": blob}), tmp_path / "b-out")
        files_before = len(_blob_files(server))
        stats = await b.push_files([blob])  # B re-uploads: verified, linked, stored once
        assert stats.blobs_new == 1 and stats.bytes_sent > 0
        assert len(_blob_files(server)) == files_before
        assert await b.find_missing([blob.digest]) == set()


async def test_token_without_write_cannot_upload(
    server: StoragedServer, make_token: MakeToken, tmp_path: Path
) -> None:
    blob = write_file(tmp_path / "f.txt", b"x" * 1000)
    async with StorageClient(server.address, make_token(operations=("read",))) as reader:
        with pytest.raises(PermissionDenied):
            await reader.push_files([blob])
    async with StorageClient(server.address, "not-a-token") as bogus:
        from c3.errors import Unauthenticated

        with pytest.raises(Unauthenticated):
            await bogus.find_missing([blob.digest])


async def test_unsafe_manifests_are_refused(client: StorageClient) -> None:
    digest = await client.push_bytes(b"payload")
    for bad in ("../escape", "/abs/path", "a/../../b", "a//b"):
        manifest = common_pb2.Manifest(
            entries=[common_pb2.ManifestEntry(path=bad, digest=digest, size=7)]
        )
        with pytest.raises(InvalidArgument, match="unsafe path"):
            await client.put_manifest(manifest)
    dup = common_pb2.Manifest(
        entries=[common_pb2.ManifestEntry(path="a", digest=digest, size=7)] * 2
    )
    with pytest.raises(InvalidArgument, match="duplicate"):
        await client.put_manifest(dup)


async def test_download_never_writes_outside_dest(client: StorageClient, tmp_path: Path) -> None:
    digest = await client.push_bytes(b"evil bytes")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    escaping = common_pb2.Manifest(
        entries=[common_pb2.ManifestEntry(path="link/pwned", digest=digest, size=10)]
    )
    with pytest.raises(InvalidArgument, match="escapes"):
        await client.download_tree(escaping, dest)
    dotdot = common_pb2.Manifest(
        entries=[common_pb2.ManifestEntry(path="../pwned", digest=digest, size=10)]
    )
    with pytest.raises(InvalidArgument):
        await client.download_tree(dotdot, dest)
    assert list(outside.iterdir()) == [] and not (tmp_path / "pwned").exists()


async def test_download_through_cache_fetches_only_uncached(
    client: StorageClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    blobs = {
        "one.txt": write_file(src / "one.txt", text_bytes(20_000, 1)),
        "two.bin": write_file(src / "two.bin", random_bytes(1_500_000)),
    }
    await client.push_files(list(blobs.values()))
    manifest = _entries(blobs)
    cache = await BlobCache(tmp_path / "cache", max_bytes=1 << 30).open()
    assert await client.download_tree(manifest, tmp_path / "job1", cache=cache, writable=False) > 0
    assert cache.has(blobs["one.txt"].digest) and cache.has(blobs["two.bin"].digest)
    assert await client.download_tree(manifest, tmp_path / "job2", cache=cache) == 0
    # A writable copy edited by a job leaves the cache intact.
    (tmp_path / "job2" / "one.txt").write_bytes(b"scribbled")
    assert cache.path(blobs["one.txt"].digest).read_bytes() == blobs["one.txt"].path.read_bytes()
    # Read-only trees share the cached inode; the cached file cannot be written.
    linked = tmp_path / "job1" / "two.bin"
    assert linked.stat().st_ino == cache.path(blobs["two.bin"].digest).stat().st_ino
    assert not os.access(linked, os.W_OK) or os.getuid() == 0


async def test_blob_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = await BlobCache(tmp_path / "cache", max_bytes=250).open()
    datas = [bytes([i]) * 100 for i in range(3)]
    digests = [mf.sha256_bytes(d) for d in datas]
    await cache.add_bytes(digests[0], datas[0])
    await cache.add_bytes(digests[1], datas[1])
    cache.link_into(digests[0], tmp_path / "use0", executable=False)  # 0 is now most recent
    await cache.add_bytes(digests[2], datas[2])
    assert cache.has(digests[0]) and cache.has(digests[2]) and not cache.has(digests[1])
    assert cache.total_bytes == 200
    with pytest.raises(DataLoss):
        await cache.add_bytes(digests[1], b"not the content")


async def test_gc_reclaims_only_unreferenced_blobs(
    client: StorageClient, server: StoragedServer, tmp_path: Path
) -> None:
    kept = write_file(tmp_path / "kept.txt", text_bytes(10_000, 1))
    dropped = write_file(tmp_path / "dropped.txt", text_bytes(10_000, 2))
    await client.push_files([kept, dropped])
    d1 = await client.put_manifest(_entries({"kept.txt": kept, "dropped.txt": dropped}))
    await client.commit("/datasets/one", d1)
    d2 = await client.put_manifest(_entries({"kept.txt": kept}))
    await client.commit("/datasets/two", d2)
    # Within the grace period nothing goes, even unreferenced blobs.
    stats = await server.collect_garbage()
    assert stats.blobs_removed == 0  # type: ignore[attr-defined]
    await client.remove("/datasets/one", recursive=True)
    stats = await server.collect_garbage(grace_seconds=0)
    assert stats.blobs_removed == 2  # type: ignore[attr-defined]  # dropped.txt and manifest d1
    assert await client.find_missing([kept.digest, dropped.digest, d1, d2]) == {dropped.digest, d1}
    out = tmp_path / "out"
    await client.download_tree(await client.get_manifest(d2), out)
    assert (out / "kept.txt").read_bytes() == kept.path.read_bytes()


async def test_download_refuses_a_reply_that_leaves_blobs_out(
    client: StorageClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await client.push_bytes(b"first file")
    second = await client.push_bytes(b"second file")
    tree = common_pb2.Manifest(entries=[
        common_pb2.ManifestEntry(path="a.txt", digest=first, size=10),
        common_pb2.ManifestEntry(path="b.txt", digest=second, size=11),
    ])
    real = client.get_blobs

    async def drops_one(digests, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Stands in for a server reply short of one blob (a real server errors instead).
        async for blob in real(digests, *args, **kwargs):
            if blob.digest != second:
                yield blob

    monkeypatch.setattr(client, "get_blobs", drops_one)
    with pytest.raises(DataLoss, match="did not send 1 of 2"):
        await client.download_tree(tree, tmp_path / "dest")
