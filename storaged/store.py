"""Blob-level domain logic: find-missing, verified batched and streamed writes (resumable),
reads, manifests. Every write is checked against its digest before anything is kept.

Visibility is per org: a digest is present for an org only when that org uploaded it or
committed a manifest containing it. Bytes are stored once on disk whatever the org.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from c3 import manifest as mf
from c3.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from c3.storage import codec
from c3.storage.batching import batches
from c3.storage.wire import STREAM_CHUNK, Chunk
from c3.v1 import common_pb2, storage_pb2
from storaged.backend import BlobBackend
from storaged.meta import BlobRow, Metadata
from storaged.storeio import (
    append_partial,
    decode_manifest,
    encode_manifest,
    open_reader,
    read_inline_many,
    read_stored,
    skip_bytes,
    verify_and_store,
    verify_partial,
)

T = TypeVar("T")
_MANIFESTS_CACHED = 64  # parsed (for commits) and as bytes (for GetManifest)
# GetBlobs reads this many blobs (or bytes as stored) per thread trip: a workspace of
# small files would otherwise pay a trip per file, and the first blobs still go out early.
READ_GROUP = 64
READ_GROUP_BYTES = 1 << 20


def _max_payload(size: int) -> int:
    # zstd never expands data by more than a few bytes per 128 KiB block plus a header.
    return size + size // 64 + 4096


class BlobStore:
    def __init__(self, backend: BlobBackend, meta: Metadata, *, max_blob_bytes: int) -> None:
        self.backend = backend
        self.meta = meta
        self.max_blob_bytes = max_blob_bytes
        # More threads than cores: a batch waiting on the group sync holds one.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blobstore")
        self._inflight: Counter[str] = Counter()
        self._deleting: dict[str, asyncio.Event] = {}
        self._active_uploads: set[str] = set()
        self._manifests: OrderedDict[str, common_pb2.Manifest] = OrderedDict()
        # Their stored bytes, for GetManifest: a job fetches the manifest just pushed.
        self._manifest_data: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()  # waits for a pool thread still inside the backend

    # GC coordination: a digest being written is never deleted, and a write waits for a
    # deletion in progress to finish (then finds the blob gone and stores it again).

    @contextlib.asynccontextmanager
    async def _claim(self, digests: Sequence[str]) -> AsyncIterator[None]:
        while True:
            busy = next((self._deleting[d] for d in digests if d in self._deleting), None)
            if busy is None:
                break
            await busy.wait()
        self._inflight.update(digests)
        try:
            yield
        finally:
            self._inflight.subtract(digests)
            for d in digests:
                if self._inflight[d] <= 0:
                    del self._inflight[d]

    async def reclaim(self, digest: str, cutoff: float) -> bool:
        """Delete a blob untouched since `cutoff` unless a write holds it (used by GC)."""
        if self._inflight.get(digest) or digest in self._deleting:
            return False
        done = self._deleting[digest] = asyncio.Event()
        try:
            if not await self.meta.forget_blob_if_stale(digest, cutoff):
                return False
            await self.run(self.backend.delete, digest)
            self._manifests.pop(digest, None)
            self._manifest_data.pop(digest, None)
            return True
        finally:
            del self._deleting[digest]
            done.set()

    def inflight(self) -> set[str]:
        return set(self._inflight)

    # Checks --------------------------------------------------------------------------

    def _check_header(self, digest: str, size: int, compression: int) -> None:
        mf.check_digest(digest)
        codec.check_compression(compression)
        if size > self.max_blob_bytes:
            raise ResourceExhausted(
                f"blob {digest[:12]} is {size} bytes, over the store's limit of"
                f" {self.max_blob_bytes} bytes"
            )

    async def _require_visible(self, org: str, digests: Sequence[str]) -> None:
        for d in digests:
            mf.check_digest(d)
        present = await self.meta.referenced_by_org(org, digests)
        missing = [d for d in digests if d not in present]
        if missing:
            raise NotFound(
                f"blob {missing[0]} not found"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )

    # Find / put ----------------------------------------------------------------------

    async def find_missing(self, org: str, digests: Sequence[str]) -> list[str]:
        unique = list(dict.fromkeys(digests))
        for d in unique:
            mf.check_digest(d)
        present = await self.meta.referenced_by_org(org, unique)
        if present:
            await self.meta.touch(list(present))  # the caller will rely on them: keep them
        return [d for d in unique if d not in present]

    async def put_blobs(self, org: str, blobs: Sequence[storage_pb2.BlobData]) -> tuple[int, int]:
        """Verify every blob, then store the new ones; (stored, new compressed bytes)."""
        # (digest, size, compression, payload): each protobuf bytes field read copies it,
        # so every payload is taken out of its message exactly once.
        unique: dict[str, tuple[str, int, int, bytes]] = {}
        for b in blobs:
            digest, size, compression, payload = b.digest, b.size, b.compression, b.data
            if compression == storage_pb2.COMPRESSION_UNSPECIFIED:
                compression = storage_pb2.COMPRESSION_NONE  # unset means raw bytes
            self._check_header(digest, size, compression)
            if len(payload) > _max_payload(size):
                raise InvalidArgument(f"blob {digest[:12]}: payload larger than its size allows")
            unique.setdefault(digest, (digest, size, compression, payload))
        items = list(unique.values())
        digests = list(unique)
        async with self._claim(digests):
            existing = await self.meta.blob_rows(digests)
            new = [b for b in items if b[0] not in existing]
            # One trip to the pool: every blob is checked (one already stored too: a copy
            # that does not match its name must not link this org to it), all of them
            # before any is kept, so one bad blob fails the whole batch; then the new ones
            # are stored.
            await self.run(verify_and_store, self.backend, items, new)
            rows = [BlobRow(d, size, len(p), c) for d, size, c, p in new]
            await self.meta.record_blobs(org, rows, [d for d in digests if d in existing])
        return len(items), sum(len(b[3]) for b in new)

    def _upload_key(self, org: str, digest: str, compression: int) -> str:
        org_tag = hashlib.sha256(org.encode()).hexdigest()[:16]
        return f"{org_tag}-{digest}-{compression}"

    async def upload_offset(self, org: str, digest: str, compression: int) -> int:
        mf.check_digest(digest)
        codec.check_compression(compression)
        return await self.run(self.backend.partial_size, self._upload_key(org, digest, compression))

    async def put_stream(self, org: str, chunks: AsyncIterator[Chunk]) -> tuple[str, int]:
        first = await anext(chunks, None)
        if first is None:
            raise InvalidArgument("empty upload stream: the first chunk must carry the header")
        if first.compression == storage_pb2.COMPRESSION_UNSPECIFIED:
            first.compression = codec.NONE  # unset means raw bytes
        digest, size, compression = first.digest, first.size, first.compression
        self._check_header(digest, size, compression)
        key = self._upload_key(org, digest, compression)
        if key in self._active_uploads:
            raise Aborted(f"an upload of blob {digest[:12]} is already in progress")
        self._active_uploads.add(key)
        try:
            return digest, await self._receive(org, key, first, chunks)
        finally:
            self._active_uploads.discard(key)

    async def _receive(
        self, org: str, key: str, first: Chunk, chunks: AsyncIterator[Chunk]
    ) -> int:
        digest, size, compression = first.digest, first.size, first.compression
        held = await self.run(self.backend.partial_size, key)
        if first.offset > held:
            raise FailedPrecondition(
                f"upload of {digest[:12]} starts at byte {first.offset} but the server holds"
                f" {held}; resume from UploadOffset"
            )
        # Verify while receiving when the stream starts at 0; a resumed upload is checked
        # by reading the whole partial file back at the end.
        verifier = codec.StreamVerifier(digest, size, compression) if first.offset == 0 else None
        offset, received, limit = first.offset, 0, _max_payload(size)
        complete = False
        writer = await self.run(self.backend.open_partial, key, first.offset)
        try:
            chunk: Chunk | None = first
            while chunk is not None:
                if chunk.offset != offset:
                    raise InvalidArgument(f"chunk at offset {chunk.offset}, expected {offset}")
                if chunk.data:
                    if offset + len(chunk.data) > limit:
                        await self.run(self.backend.drop_partial, key)
                        raise InvalidArgument(
                            f"upload of {digest[:12]} is longer than its size allows"
                        )
                    offset = await self.run(append_partial, writer, chunk.data, verifier)
                    received += len(chunk.data)
                if chunk.last:
                    complete = True
                    break
                chunk = await anext(chunks, None)
        finally:
            await self.run(writer.close)
        if not complete:
            raise FailedPrecondition(
                f"upload of {digest[:12]} ended at byte {offset} without its last chunk;"
                " resume from UploadOffset"
            )
        if first.total and offset != first.total:
            await self.run(self.backend.drop_partial, key)
            raise InvalidArgument(
                f"upload of {digest[:12]}: {offset} bytes, announced {first.total}"
            )
        async with self._claim([digest]):
            try:
                if verifier is not None:
                    await self.run(verifier.finish)
                else:
                    await self.run(verify_partial, self.backend, key, digest, size, compression)
            except Exception:
                await self.run(self.backend.drop_partial, key)
                raise
            if digest in await self.meta.blob_rows([digest]):
                await self.run(self.backend.drop_partial, key)
                await self.meta.record_blobs(org, [], [digest])
            else:
                await self.run(self.backend.commit_partial, key, digest, compression)
                await self.meta.record_blobs(org, [BlobRow(digest, size, offset, compression)], [])
        return received

    # Reads ---------------------------------------------------------------------------

    async def get_blobs(
        self, org: str, digests: Sequence[str], accept_zstd: bool
    ) -> AsyncIterator[storage_pb2.BlobData]:
        unique = list(dict.fromkeys(digests))
        await self._require_visible(org, unique)
        rows = await self.meta.blob_rows(unique)
        wanted = [(rows[d].size, d) for d in unique]

        def stored_size(item: tuple[int, str]) -> int:
            return rows[item[1]].stored_size

        for group in batches(wanted, READ_GROUP_BYTES, READ_GROUP, stored_size):
            for blob in await self.run(read_inline_many, self.backend, group, accept_zstd):
                yield blob

    async def get_stream(
        self, org: str, digest: str, accept_zstd: bool, offset: int
    ) -> AsyncIterator[storage_pb2.BlobChunk]:
        await self._require_visible(org, [digest])
        row = (await self.meta.blob_rows([digest]))[digest]
        raw = row.compression == codec.NONE or not accept_zstd
        compression = codec.Compression(codec.NONE if raw else row.compression)
        total = row.size if raw else row.stored_size
        if offset > total:
            raise InvalidArgument(f"offset {offset} is past the end ({total} bytes)")
        reader = await self.run(open_reader, self.backend, digest, raw)
        try:
            first = True
            await self.run(skip_bytes, reader, offset)
            while True:
                data = await self.run(reader.read, STREAM_CHUNK)
                last = offset + len(data) >= total
                chunk = storage_pb2.BlobChunk(offset=offset, data=data, last=last)
                if first:
                    chunk.digest, chunk.size, chunk.compression, chunk.total = (
                        digest,
                        row.size,
                        compression,
                        total,
                    )
                    first = False
                yield chunk
                offset += len(data)
                if last or not data:
                    break
        finally:
            await self.run(reader.close)

    # Manifests -----------------------------------------------------------------------

    async def put_manifest(self, org: str, manifest: common_pb2.Manifest) -> tuple[str, list[str]]:
        digest, data, compression, payload = await self.run(encode_manifest, manifest)
        blob = storage_pb2.BlobData(
            digest=digest, size=len(data), compression=codec.Compression(compression), data=payload
        )
        await self.put_blobs(org, [blob])
        await self.meta.mark_manifest(digest)
        _remember(self._manifests, digest, manifest)  # a Commit of it usually follows
        _remember(self._manifest_data, digest, (compression, len(data), payload))  # a job reads it
        entries = list(dict.fromkeys(e.digest for e in manifest.entries))
        present = await self.meta.referenced_by_org(org, entries)
        return digest, [d for d in entries if d not in present]

    async def get_manifest_data(self, org: str, digest: str) -> tuple[int, int, bytes]:
        """A manifest as stored: (compression, size, payload), for a reader that
        decompresses it and checks its digest itself."""
        await self._require_visible(org, [digest])
        await self.meta.touch([digest])
        return await self._stored_manifest(digest)

    async def load_manifest(self, digest: str) -> common_pb2.Manifest:
        """A stored manifest, without visibility checks (catalog, GC)."""
        cached = self._manifests.get(digest)
        if cached is not None:
            self._manifests.move_to_end(digest)
            return cached
        compression, size, payload = await self._stored_manifest(digest)
        manifest = await self.run(decode_manifest, digest, size, compression, payload)
        _remember(self._manifests, digest, manifest)
        return manifest

    async def _stored_manifest(self, digest: str) -> tuple[int, int, bytes]:
        cached = self._manifest_data.get(digest)
        if cached is not None:
            self._manifest_data.move_to_end(digest)
            return cached
        row = (await self.meta.blob_rows([digest])).get(digest)
        try:
            if row is None:
                raise FileNotFoundError(digest)
            compression, payload = await self.run(read_stored, self.backend, digest)
        except FileNotFoundError as exc:
            raise NotFound(f"manifest {digest} not found") from exc
        found = (compression, row.size, payload)
        _remember(self._manifest_data, digest, found)
        return found


def _remember(cache: OrderedDict[str, T], digest: str, value: T) -> None:
    """Keep `value` in a small LRU of the most recent manifests."""
    cache[digest] = value
    cache.move_to_end(digest)
    if len(cache) > _MANIFESTS_CACHED:
        cache.popitem(last=False)
