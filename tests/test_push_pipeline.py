"""Tree pushes through the hashing pipeline (c3.storage.treepush) against a real storaged: files
the index cannot vouch for are read once, hashed and sent; the batches the client builds
itself are verified blob by blob on the server."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import grpc
import pytest

from c3 import grpcutil
from c3.errors import DataLoss, FailedPrecondition, PermissionDenied
from c3.storage import codec
from c3.storage.client import StorageClient
from c3.storage.hashindex import HashIndex
from c3.storage.treepush import TreePusher
from c3.storage.wire import encode_put_blobs
from c3.tokens import TokenSigner
from c3.v1 import storage_pb2
from storaged.server import StoragedServer
from tests.harness.storage import MakeToken, random_bytes, settled_tree, start_storaged, text_bytes

pytestmark = pytest.mark.unit


def _mixed_files() -> dict[str, bytes]:
    files = {f"src/t{i:03d}.txt": text_bytes(1_000 + 97 * i, seed=i) for i in range(120)}
    files |= {f"bin/r{i:03d}.bin": random_bytes(2_000 + 131 * i) for i in range(60)}
    files["src/copy.txt"] = files["src/t007.txt"]  # same content: one blob
    files["empty"] = b""
    files["large/text.log"] = text_bytes(3 << 20, seed=99)  # streamed, compressed
    files["large/noise.bin"] = random_bytes((2 << 20) + 17)  # streamed raw
    return files


def _digests(files: dict[str, bytes]) -> set[str]:
    return {hashlib.sha256(d).hexdigest() for d in files.values()}


async def test_cold_push_sends_each_new_blob_once_and_round_trips(
    client: StorageClient, tmp_path: Path
) -> None:
    files = _mixed_files()
    scanned = settled_tree(tmp_path / "src", files)
    seen: list[tuple[int, int]] = []
    async with HashIndex(tmp_path / "index.sqlite") as index:
        pusher = TreePusher(index)
        pushed, hashed = await pusher.push_files(
            tmp_path / "src", scanned, client, "server", lambda d, t: seen.append((d, t))
        )
        raw = sum(len(d) for d in files.values())
        assert hashed.files_hashed == len(files) and hashed.bytes_hashed == raw
        assert pushed.blobs_new == len(_digests(files))
        # Noise went raw (it does not compress), text compressed.
        noise = sum(len(d) for rel, d in files.items() if rel.endswith(".bin"))
        assert noise <= pushed.bytes_sent < noise + (raw - noise) // 4
        assert await client.find_missing(_digests(files)) == set()
        # Progress only grows and ends at its total.
        assert seen and seen[-1][0] == seen[-1][1]
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

        manifest = await client.get_manifest(pushed.digest)
        out = tmp_path / "out"
        await client.download_tree(manifest, out)
        for rel, data in files.items():
            assert (out / rel).read_bytes() == data, rel

        again, rehashed = await pusher.push_files(tmp_path / "src", scanned, client, "server")
        assert (rehashed.files_hashed, again.blobs_new, again.bytes_sent) == (0, 0, 0)
        assert again.digest == pushed.digest and not again.manifest_sent


async def test_files_the_index_knows_are_sent_to_a_store_that_lacks_them(
    client: StorageClient, tmp_path: Path, signer: TokenSigner, make_token: MakeToken
) -> None:
    files = {"a.txt": text_bytes(50_000), "b.bin": random_bytes(70_000)}
    scanned = settled_tree(tmp_path / "src", files)
    async with HashIndex(tmp_path / "index.sqlite") as index:
        await TreePusher(index).push_files(tmp_path / "src", scanned, client, "first")
        other = await start_storaged(tmp_path / "other-store", signer, gc=False)
        try:
            async with StorageClient(other.address, make_token()) as fresh:
                pushed, hashed = await TreePusher(index).push_files(
                    tmp_path / "src", scanned, fresh, "second"
                )
                assert hashed.files_hashed == 0  # digests from the index
                assert pushed.blobs_new == 2
                assert await fresh.find_missing(_digests(files)) == set()
        finally:
            await other.stop(0)


async def test_a_file_that_changed_size_since_its_scan_is_named(
    client: StorageClient, tmp_path: Path
) -> None:
    scanned = settled_tree(tmp_path / "src", {"keep.txt": b"kept", "grows.txt": b"short"})
    (tmp_path / "src" / "grows.txt").write_bytes(b"much longer than before")
    async with HashIndex(tmp_path / "index.sqlite") as index:
        with pytest.raises(FailedPrecondition, match=r"grows\.txt changed while it was being"):
            await TreePusher(index).push_files(tmp_path / "src", scanned, client, "server")



async def test_a_file_deleted_since_its_scan_is_named(
    client: StorageClient, tmp_path: Path
) -> None:
    scanned = settled_tree(tmp_path / "src", {"keep.txt": b"kept", "gone.txt": b"soon deleted"})
    (tmp_path / "src" / "gone.txt").unlink()
    async with HashIndex(tmp_path / "index.sqlite") as index:
        with pytest.raises(FailedPrecondition, match=r"gone\.txt: deleted while it was being"):
            await TreePusher(index).push_files(tmp_path / "src", scanned, client, "server")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_an_unreadable_file_is_named(client: StorageClient, tmp_path: Path) -> None:
    scanned = settled_tree(tmp_path / "src", {"ok.txt": b"fine", "secret.txt": b"no access"})
    (tmp_path / "src" / "secret.txt").chmod(0)
    async with HashIndex(tmp_path / "index.sqlite") as index:
        with pytest.raises(PermissionDenied, match=r"cannot read .*secret\.txt: .*permissions"):
            await TreePusher(index).push_files(tmp_path / "src", scanned, client, "server")


async def test_incompressible_blobs_are_stored_raw_and_still_verified(
    client: StorageClient, server: StoragedServer, make_token: MakeToken
) -> None:
    noise = random_bytes(100_000)
    digest = await client.push_bytes(noise)
    row = (await server.store.meta.blob_rows([digest]))[digest]
    assert row.compression == codec.NONE and row.stored_size == len(noise)
    blobs = [b async for b in client.get_blobs([digest])]
    assert blobs[0].compression == codec.NONE and blobs[0].data == noise

    # A raw payload that is not the content its digest names is refused, and not kept.
    other = random_bytes(100_000)
    wrong = hashlib.sha256(other).hexdigest()
    stub = storage_pb2_grpc_stub(server)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(encode_put_blobs([(wrong, len(noise), codec.NONE, noise)]),
                   metadata=grpcutil.storage_metadata(make_token()))
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert await client.find_missing([wrong]) == {wrong}


def storage_pb2_grpc_stub(server: StoragedServer) -> grpc.aio.UnaryUnaryMultiCallable:
    """PutBlobs taking a request serialized by the client's own encoder."""
    channel = grpcutil.channel(server.address)
    return channel.unary_unary(
        "/c3.v1.Storage/PutBlobs",
        request_serializer=None,
        response_deserializer=storage_pb2.PutBlobsResponse.FromString,
    )


async def test_one_corrupt_blob_refuses_its_whole_batch(
    client: StorageClient, server: StoragedServer, make_token: MakeToken
) -> None:
    good = [text_bytes(20_000 + i, seed=i) for i in range(3)]
    batch = []
    for data in good:
        compression, payload = codec.compress(data)
        batch.append((hashlib.sha256(data).hexdigest(), len(data), compression, payload))
    bad = text_bytes(30_000, seed=42)
    compression, payload = codec.compress(bad)
    assert compression == codec.ZSTD
    middle = len(payload) // 2
    corrupt = payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1 :]
    batch.insert(1, (hashlib.sha256(bad).hexdigest(), len(bad), compression, corrupt))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await storage_pb2_grpc_stub(server)(
            encode_put_blobs(batch), metadata=grpcutil.storage_metadata(make_token())
        )
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert await client.find_missing([b[0] for b in batch]) == {b[0] for b in batch}
    # The same batch without the corrupt blob is stored.
    del batch[1]
    await storage_pb2_grpc_stub(server)(
        encode_put_blobs(batch), metadata=grpcutil.storage_metadata(make_token())
    )
    assert await client.find_missing([b[0] for b in batch]) == set()


async def test_a_malformed_stream_message_is_refused(
    server: StoragedServer, make_token: MakeToken
) -> None:
    call = grpcutil.channel(server.address).stream_unary(
        "/c3.v1.Storage/PutBlobStream",
        request_serializer=None,
        response_deserializer=storage_pb2.PutBlobStreamResponse.FromString,
    )

    async def messages():  # type: ignore[no-untyped-def]
        yield b"\x0a\x40" + b"a" * 10  # a digest field cut short

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(messages(), metadata=grpcutil.storage_metadata(make_token()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed BlobChunk" in (err.value.details() or "")


async def test_put_loaded_reports_a_mismatch_as_data_loss(client: StorageClient) -> None:
    data = text_bytes(10_000)
    with pytest.raises(DataLoss):
        await client.put_loaded([(hashlib.sha256(b"other").hexdigest(), data)])
