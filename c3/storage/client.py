"""The storaged client every part of c3 uses: dedup push, manifests, namespace, downloads.

Transfers are batched (FindMissing thousands per call, small blobs packed a few MiB per
PutBlobs, large ones streamed in 1 MiB chunks and resumed from UploadOffset) and
concurrent; reading, hashing and compression run on a thread pool. Every gRPC failure
becomes a `c3.errors` class in `_rpc`, the one place that translates them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc import aio

from c3 import grpcutil
from c3 import manifest as mf
from c3.errors import C3Error, DataLoss, from_rpc_error
from c3.storage import codec
from c3.storage.batching import batches, run_all
from c3.storage.blobcache import BlobCache
from c3.storage.download import download_tree
from c3.storage.upload import (
    LargeBlobReader,
    cheaper_to_send,
    compress_batch,
    find_changed,
    prepare_batch,
)
from c3.storage.wire import BATCH_BYTES, SMALL_BLOB_MAX, method_path
from c3.v1 import common_pb2, storage_pb2, storage_pb2_grpc

T = TypeVar("T")
BATCH_COUNT = 2000
FIND_MISSING_BATCH = 10_000
BATCH_CONCURRENCY = 6
STREAM_CONCURRENCY = 4
# Threads for reading, hashing and compressing (they release the GIL).
POOL_THREADS = min(8, (os.cpu_count() or 2) + 2)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LocalBlob:
    path: Path
    digest: str
    size: int


@dataclass
class PushStats:
    blobs_new: int = 0
    bytes_sent: int = 0  # bytes on the wire (compressed)
    bytes_total: int = 0


@contextlib.contextmanager
def _rpc() -> Iterator[None]:
    """Turn a gRPC failure into the matching C3Error (the only place that does)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


def _length(blob: tuple[str, bytes]) -> int:
    return len(blob[1])


class StorageClient:
    def __init__(
        self, address: str, token: str, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.address = address
        self._token = token
        self._channel = grpcutil.channel(address, credentials, service="storage")
        self._stub = storage_pb2_grpc.StorageStub(self._channel)
        # PutBlobs and PutBlobStream with requests already serialized on the thread pool
        # (c3.storage.wire's encoders), so the event loop never copies payloads.
        self._put_blobs_encoded: aio.UnaryUnaryMultiCallable[bytes, storage_pb2.PutBlobsResponse]
        self._put_blobs_encoded = self._channel.unary_unary(
            method_path("PutBlobs"),
            request_serializer=None,
            response_deserializer=storage_pb2.PutBlobsResponse.FromString,
        )
        self._put_stream_encoded: aio.StreamUnaryMultiCallable[
            bytes, storage_pb2.PutBlobStreamResponse
        ]
        self._put_stream_encoded = self._channel.stream_unary(
            method_path("PutBlobStream"),
            request_serializer=None,
            response_deserializer=storage_pb2.PutBlobStreamResponse.FromString,
        )
        # Shared by every transfer of this client: concurrent pushes (a tree's hashing
        # pipeline and its known files) stay within one bound.
        self._batch_slots = asyncio.Semaphore(BATCH_CONCURRENCY)
        self._stream_slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="c3-storage")

    async def __aenter__(self) -> StorageClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def set_token(self, token: str) -> None:
        self._token = token

    @property
    def _md(self) -> tuple[tuple[str, str], ...]:
        return grpcutil.storage_metadata(self._token)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # Blobs -----------------------------------------------------------------------------

    async def find_missing(self, digests: Iterable[str]) -> set[str]:
        unique = list(dict.fromkeys(digests))
        missing: set[str] = set()
        for i in range(0, len(unique), FIND_MISSING_BATCH):
            request = storage_pb2.FindMissingRequest(digests=unique[i : i + FIND_MISSING_BATCH])
            with _rpc():
                reply = await self._stub.FindMissing(request, metadata=self._md)
            missing.update(reply.missing)
        return missing

    async def push_files(
        self, blobs: Sequence[LocalBlob], progress: Progress | None = None
    ) -> PushStats:
        """Upload the blobs the server lacks. Raises FailedPrecondition naming the file when
        a file no longer has the digest it was hashed to."""
        unique = {b.digest: b for b in blobs}
        if cheaper_to_send([b.size for b in unique.values()]):
            todo = list(unique.values())
        else:
            missing = await self.find_missing(unique)
            todo = [b for d, b in unique.items() if d in missing]
        stats = await self.upload_files(todo, progress)
        stats.bytes_total = sum(b.size for b in unique.values())
        return stats

    async def upload_files(
        self, todo: Sequence[LocalBlob], progress: Progress | None = None
    ) -> PushStats:
        """Upload these blobs (the caller knows the server lacks them), reading each file
        once: small ones in batches, large ones streamed."""
        stats = PushStats(bytes_total=sum(b.size for b in todo))
        todo_bytes, done = stats.bytes_total, 0

        def advance(raw: int, wire: int, blobs_new: int) -> None:
            nonlocal done
            done += raw
            stats.bytes_sent += wire
            stats.blobs_new += blobs_new
            if progress is not None:
                progress(done, todo_bytes)

        small = [b for b in todo if b.size <= SMALL_BLOB_MAX]
        large = [b for b in todo if b.size > SMALL_BLOB_MAX]

        async def send_batch(group: list[LocalBlob]) -> None:
            async with self._batch_slots:
                wanted = [(b.path, b.digest, b.size) for b in group]
                request, wire = await self.run(prepare_batch, wanted)
                await self._naming_changed(wanted, self._put_encoded(request))
                advance(sum(b.size for b in group), wire, len(group))

        async def send_stream(blob: LocalBlob) -> None:
            wire = await self.push_large_file(blob)
            advance(blob.size, wire, 1)

        # The big ones first: they bound the total time.
        await run_all(
            [send_stream(b) for b in large]
            + [send_batch(g) for g in batches(small, BATCH_BYTES, BATCH_COUNT, lambda b: b.size)]
        )
        return stats

    async def put_loaded(self, blobs: Sequence[tuple[str, bytes]]) -> int:
        """Upload blobs already in memory, as (digest, content) the caller has just hashed:
        compressed and sent in bounded batches. Returns the payload bytes sent."""
        sent = 0

        async def send(group: list[tuple[str, bytes]]) -> None:
            nonlocal sent
            async with self._batch_slots:
                request, wire = await self.run(compress_batch, group)
                await self._put_encoded(request)
                sent += wire

        await run_all([send(g) for g in batches(blobs, BATCH_BYTES, BATCH_COUNT, _length)])
        return sent

    async def _put_encoded(self, request: bytes) -> None:
        with _rpc():
            await self._put_blobs_encoded(request, metadata=self._md)

    async def push_large_file(self, blob: LocalBlob) -> int:
        """Stream one file (the server lacks it); returns the payload bytes sent. A refused
        upload of a file edited since it was hashed is reported as that."""
        async with self._stream_slots:
            reader = LargeBlobReader.for_file(blob.path, blob.digest, blob.size)
            return await self._naming_changed(
                [(blob.path, blob.digest, blob.size)], self._push_stream(reader)
            )

    async def _naming_changed(
        self, files: list[tuple[Path, str, int]], upload: Coroutine[Any, Any, T]
    ) -> T:
        """Await an upload of these files. The server refuses a blob that does not match
        its digest: most likely a file edited since it was hashed, named if so."""
        try:
            return await upload
        except DataLoss:
            changed = await self.run(find_changed, files)
            if changed is not None:
                raise changed from None
            raise

    async def _push_stream(self, reader: LargeBlobReader) -> int:
        """Stream one blob, resuming from what the server already holds; wire bytes sent."""
        try:
            await self.run(reader.open)
            with _rpc():
                held = await self._stub.UploadOffset(
                    storage_pb2.UploadOffsetRequest(
                        digest=reader.digest, compression=codec.Compression(reader.compression)
                    ),
                    metadata=self._md,
                )
            sent = 0
            failure: list[BaseException] = []

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal sent
                messages = reader.messages(self.run, held.offset)
                try:
                    async for message, payload in messages:
                        sent += payload
                        yield message
                except C3Error as exc:  # the file changed: end without `last`, report it below
                    failure.append(exc)
                finally:
                    await messages.aclose()

            try:
                with _rpc():
                    await self._put_stream_encoded(chunks(), metadata=self._md)
            except C3Error:
                if failure:
                    raise failure[0] from None
                raise
            return sent
        finally:
            await self.run(reader.close)

    async def push_bytes(self, data: bytes) -> str:
        digest = mf.sha256_bytes(data)
        if len(data) > SMALL_BLOB_MAX:
            await self._push_stream(LargeBlobReader.for_bytes(data, digest))
            return digest
        await self.put_loaded([(digest, data)])
        return digest

    async def get_blobs(self, digests: Sequence[str]) -> AsyncIterator[storage_pb2.BlobData]:
        """Small blobs as stored (zstd or raw); callers verify with c3.storage.codec."""
        with _rpc():
            call = self._stub.GetBlobs(
                storage_pb2.GetBlobsRequest(digests=list(digests), accept_zstd=True),
                metadata=self._md,
            )
            async for blob in call:
                yield blob

    async def get_blob_stream(
        self, digest: str, offset: int = 0
    ) -> AsyncIterator[storage_pb2.BlobChunk]:
        with _rpc():
            call = self._stub.GetBlobStream(
                storage_pb2.GetBlobStreamRequest(digest=digest, accept_zstd=True, offset=offset),
                metadata=self._md,
            )
            async for chunk in call:
                yield chunk

    # Manifests -----------------------------------------------------------------------

    async def put_manifest(self, manifest: common_pb2.Manifest) -> str:
        return (await self.store_manifest(manifest))[0]

    async def store_manifest(self, manifest: common_pb2.Manifest) -> tuple[str, list[str]]:
        """Store a manifest; (its digest, entry digests the server still lacks)."""
        with _rpc():
            reply = await self._stub.PutManifest(
                storage_pb2.PutManifestRequest(manifest=manifest), metadata=self._md
            )
        return str(reply.digest), list(reply.missing)

    async def get_manifest(self, digest: str) -> common_pb2.Manifest:
        with _rpc():
            reply = await self._stub.GetManifest(
                storage_pb2.GetManifestRequest(digest=digest), metadata=self._md
            )
        return await self.run(_checked_manifest, digest, reply)

    async def download_tree(
        self,
        manifest: common_pb2.Manifest,
        dest: Path,
        *,
        cache: BlobCache | None = None,
        progress: Progress | None = None,
        writable: bool = True,
    ) -> int:
        """Materialise `manifest` under `dest`; returns bytes fetched over the network.
        `writable=False` (a read-only mount) lets files be hardlinked from the cache."""
        return await download_tree(
            self, manifest, dest, cache=cache, progress=progress, writable=writable
        )

    # Namespace -----------------------------------------------------------------------

    async def commit(
        self, path: str, manifest_digest: str, *, message: str = "", project: str = ""
    ) -> storage_pb2.VersionInfo:
        request = storage_pb2.CommitRequest(
            path=path, manifest_digest=manifest_digest, message=message, project=project
        )
        with _rpc():
            reply = await self._stub.Commit(request, metadata=self._md)
        return reply.version

    async def resolve(self, ref: str) -> storage_pb2.VersionInfo:
        with _rpc():
            reply = await self._stub.Resolve(storage_pb2.ResolveRequest(ref=ref), metadata=self._md)
        return reply.version

    async def list(self, path: str) -> storage_pb2.ListResponse:
        with _rpc():
            return await self._stub.List(storage_pb2.ListRequest(path=path), metadata=self._md)

    async def log(self, path: str) -> builtins.list[storage_pb2.VersionInfo]:
        with _rpc():
            reply = await self._stub.Log(storage_pb2.LogRequest(path=path), metadata=self._md)
        return list(reply.versions)

    async def remove(self, path: str, recursive: bool = False) -> int:
        with _rpc():
            reply = await self._stub.Remove(
                storage_pb2.RemoveRequest(path=path, recursive=recursive), metadata=self._md
            )
        return int(reply.removed_versions)

    async def disk_usage(self, path: str) -> storage_pb2.DiskUsageResponse:
        with _rpc():
            return await self._stub.DiskUsage(
                storage_pb2.DiskUsageRequest(path=path), metadata=self._md
            )

    # Holds (the coordinator's token only) ------------------------------------------------

    async def hold(self, path: str, version: int, holder: str, ttl_seconds: int = 0) -> float:
        """Pin `path` v`version` for `holder`; returns when the hold lapses (epoch seconds)."""
        request = storage_pb2.HoldRequest(
            path=path, version=version, holder=holder, ttl_seconds=ttl_seconds
        )
        with _rpc():
            reply = await self._stub.Hold(request, metadata=self._md)
        return reply.expires_at.ToNanoseconds() / 1e9

    async def release(self, holder: str) -> int:
        with _rpc():
            reply = await self._stub.Release(
                storage_pb2.ReleaseRequest(holder=holder), metadata=self._md
            )
        return int(reply.released)


def _checked_manifest(digest: str, reply: storage_pb2.GetManifestResponse) -> common_pb2.Manifest:
    """The manifest in `reply`: decompressed, checked against `digest` (DataLoss when it
    does not match), parsed and validated."""
    return mf.from_bytes(codec.decompress(digest, reply.size, reply.compression, reply.data))
