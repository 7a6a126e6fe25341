"""Blocking halves of a push, run on the client's thread pool: read, re-check the digest
(a file edited since it was hashed must not be stored under its old name), compress."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from c3 import storage_codec as codec
from c3.errors import FailedPrecondition, NotFound
from c3.v1 import storage_pb2

CHUNK = codec.STREAM_CHUNK


def _changed(label: str, digest: str, size: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"{label} changed since it was hashed (expected {size} bytes with digest {digest[:12]});"
        " run the command again to pick up the new content"
    )


def _read(path: Path, size: int = -1) -> bytes:
    """The file's bytes; with `size`, at most size + 1 of them (enough to see it grew).
    Plain os.open/os.read: no buffered file object per small file (a third of the cost)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise NotFound(f"{path} disappeared since it was hashed; run the command again") from exc
    try:
        if size < 0:
            size = os.fstat(fd).st_size
        chunks = []
        want = size + 1
        while want > 0:
            got = os.read(fd, want)
            if not got:
                break
            chunks.append(got)
            want -= len(got)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def prepare_batch(items: list[tuple[Path, str, int]]) -> tuple[storage_pb2.PutBlobsRequest, int]:
    """(path, digest, size) -> a PutBlobsRequest of compressed blobs, and its payload bytes.
    The content is not hashed again here: the server verifies every blob and rejects the
    batch on a mismatch, and `find_changed` then names the file (a second hash of every
    file would cost the client a fifth of its CPU on a cold push)."""
    blobs = []
    wire = 0
    for path, digest, size in items:
        data = _read(path, size)
        if len(data) != size:
            raise _changed(str(path), digest, size)
        compression, payload = codec.compress(data)
        wire += len(payload)
        blobs.append(
            storage_pb2.BlobData(
                digest=digest, size=size, compression=codec.Compression(compression), data=payload
            )
        )
    return storage_pb2.PutBlobsRequest(blobs=blobs), wire


def find_changed(items: list[tuple[Path, str, int]]) -> FailedPrecondition | None:
    """The error naming the first file whose content no longer has its digest, if any."""
    for path, digest, size in items:
        data = _read(path)
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            return _changed(str(path), digest, size)
    return None


class LargeBlobReader:
    """The byte stream of one large blob, produced 1 MiB of input at a time. The same input
    always gives the same bytes, so an interrupted upload resumes at a byte offset; the
    digest is checked at the end, before the final chunk is sent."""

    def __init__(self, opener: Callable[[], BinaryIO], digest: str, size: int, label: str) -> None:
        self._opener = opener
        self.digest = digest
        self.size = size
        self.label = label
        self.compression = codec.NONE
        self._f: BinaryIO | None = None
        self._cobj: Any = None
        self._sha = hashlib.sha256()
        self._count = 0

    @classmethod
    def for_file(cls, path: Path, digest: str, size: int) -> LargeBlobReader:
        def opener() -> BinaryIO:
            try:
                return open(path, "rb")
            except FileNotFoundError as exc:
                raise NotFound(
                    f"{path} disappeared since it was hashed; run the command again"
                ) from exc

        return cls(opener, digest, size, str(path))

    @classmethod
    def for_bytes(cls, data: bytes, digest: str) -> LargeBlobReader:
        return cls(lambda: io.BytesIO(data), digest, len(data), f"blob {digest[:12]}")

    def open(self) -> None:
        self._f = self._opener()
        # Decide from the first MiB whether compression pays for this blob.
        probe = self._f.read(CHUNK)
        self._f.seek(0)
        if codec.compress(probe)[0] == codec.ZSTD:
            self.compression = codec.ZSTD
            self._cobj = codec.new_stream_compressor()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _step(self) -> tuple[bytes, bool]:
        assert self._f is not None
        data = self._f.read(CHUNK)
        if data:
            self._sha.update(data)
            self._count += len(data)
            if self._count > self.size:
                raise _changed(self.label, self.digest, self.size)
            return (self._cobj.compress(data) if self._cobj else data), False
        if self._count != self.size or self._sha.hexdigest() != self.digest:
            raise _changed(self.label, self.digest, self.size)
        return (self._cobj.flush() if self._cobj else b""), True

    async def chunks(
        self, run: Callable[..., Awaitable[Any]], offset: int
    ) -> AsyncIterator[storage_pb2.BlobChunk]:
        """Chunks from `offset` (bytes the server already holds) to the end."""
        header = True
        position = 0
        while True:
            data, eof = await run(self._step)
            end = position + len(data)
            if end > offset:
                start = max(position, offset)
                piece = data[start - position :]
                for i in range(0, len(piece), CHUNK):
                    chunk = storage_pb2.BlobChunk(offset=start + i, data=piece[i : i + CHUNK])
                    if header:
                        self._set_header(chunk)
                        header = False
                    yield chunk
            position = end
            if eof:
                final = storage_pb2.BlobChunk(offset=max(position, offset), last=True)
                if header:
                    self._set_header(final)
                yield final
                return

    def _set_header(self, chunk: storage_pb2.BlobChunk) -> None:
        chunk.digest = self.digest
        chunk.size = self.size
        chunk.compression = codec.Compression(self.compression)
