"""The parts of a push that are not RPCs: the blocking work run on the client's thread
pool (read, compress, encode with c3.storage.wire).

A file edited since it was hashed must not be stored under its old name: the server
verifies every blob against its digest and refuses a mismatch, and `find_changed` then
names the file (the client does not hash anything twice)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from c3.errors import FailedPrecondition, NotFound
from c3.manifest import sha256_file
from c3.storage import codec
from c3.storage.wire import STREAM_CHUNK, encode_chunk, encode_put_blobs

# What a large blob is read from: a file opened unbuffered, or bytes in memory.
Source = io.RawIOBase | io.BufferedIOBase

# Up to this many small blobs go without a find-missing round trip.
SEND_WITHOUT_ASKING_BLOBS = 8
SEND_WITHOUT_ASKING_BYTES = 256 * 1024


def cheaper_to_send(sizes: Sequence[int]) -> bool:
    """Whether blobs of these sizes (a save's one or two small files) cost less to send
    outright than the round trip that asks whether the server has them (it dedups on
    arrival)."""
    return 0 < len(sizes) <= SEND_WITHOUT_ASKING_BLOBS and sum(sizes) <= SEND_WITHOUT_ASKING_BYTES


def _changed(label: str, digest: str, size: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"{label} changed since it was hashed (expected {size} bytes with digest {digest[:12]});"
        " run the command again to pick up the new content"
    )


def _read(path: Path, size: int) -> bytes:
    """At most size + 1 of the file's bytes (enough to see it grew).
    Plain os.open/os.read: no buffered file object per small file (a third of the cost)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise NotFound(f"{path} disappeared since it was hashed; run the command again") from exc
    try:
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


def compress_batch(blobs: Iterable[tuple[str, bytes]]) -> tuple[bytes, int]:
    """(digest, content) of blobs already read and hashed -> an encoded PutBlobsRequest
    of their compressed payloads, and its payload bytes."""
    compressed = [(digest, len(data), *codec.compress(data)) for digest, data in blobs]
    return encode_put_blobs(compressed), sum(len(b[3]) for b in compressed)


def prepare_batch(items: list[tuple[Path, str, int]]) -> tuple[bytes, int]:
    """(path, digest, size) -> an encoded PutBlobsRequest of compressed blobs, and its
    payload bytes. The content is not hashed again here: the server verifies every blob
    and rejects the batch on a mismatch, and `find_changed` then names the file (a second
    hash of every file would cost the client a fifth of its CPU on a cold push)."""
    loaded = []
    for path, digest, size in items:
        data = _read(path, size)
        if len(data) != size:
            raise _changed(str(path), digest, size)
        loaded.append((digest, data))
    return compress_batch(loaded)


def find_changed(items: list[tuple[Path, str, int]]) -> FailedPrecondition | None:
    """The error naming the first file whose content no longer has its digest, if any."""
    for path, digest, size in items:
        try:
            actual, actual_size = sha256_file(path)
        except FileNotFoundError:
            return _changed(str(path), digest, size)
        if actual_size != size or actual != digest:
            return _changed(str(path), digest, size)
    return None


class LargeBlobReader:
    """The byte stream of one large blob, produced 1 MiB of input at a time. The same input
    always gives the same bytes, so an interrupted upload resumes at a byte offset. Only
    the length is checked here: the server verifies the digest of every upload, and a
    refused one is traced to its file by `find_changed` (hashing every large file a second
    time on the client would cost as much as the compression of random data)."""

    def __init__(self, opener: Callable[[], Source], digest: str, size: int, label: str) -> None:
        self._opener = opener
        self.digest = digest
        self.size = size
        self.label = label
        self.compression = codec.NONE
        self._f: Source | None = None
        self._cobj: Any = None
        self._buffer: bytearray | None = None
        self._count = 0
        self._position = 0  # bytes of the stream produced so far
        self._resume = 0  # bytes the server already holds: not sent again
        self._header_sent = False
        # A read-ahead step may still run on the pool when the upload ends: `close`
        # waits for it rather than closing the file under it.
        self._lock = threading.Lock()

    @classmethod
    def for_file(cls, path: Path, digest: str, size: int) -> LargeBlobReader:
        def opener() -> Source:
            try:
                return open(path, "rb", buffering=0)
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
        probe = self._f.read(STREAM_CHUNK)
        self._f.seek(0)
        if codec.compress(probe)[0] == codec.ZSTD:
            self.compression = codec.ZSTD
            self._cobj = codec.new_stream_compressor()

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None

    def _step(self) -> tuple[bytes | memoryview, bool]:
        """The next piece of the stream (a view of the read buffer when raw: consumed
        before the next step), and whether it is the end."""
        assert self._f is not None, "LargeBlobReader is closed"
        if self._buffer is None:
            self._buffer = bytearray(STREAM_CHUNK)  # reused: no fresh memory per MiB
        n = self._f.readinto(self._buffer)
        if n:
            self._count += n
            if self._count > self.size:
                raise _changed(self.label, self.digest, self.size)
            data = memoryview(self._buffer)[:n]
            return (self._cobj.compress(data) if self._cobj else data), False
        if self._count != self.size:
            raise _changed(self.label, self.digest, self.size)
        return (self._cobj.flush() if self._cobj else b""), True

    def _header(self) -> tuple[str, int, int, int] | None:
        if self._header_sent:
            return None
        self._header_sent = True
        return self.digest, self.size, self.compression, 0

    def next_messages(self) -> tuple[list[tuple[bytes, int]], bool]:
        """Read and compress the next MiB of input: the serialized BlobChunks of its part
        of the stream at or past the resume offset, each with its payload length, and
        whether the stream ended (its last message carries `last`). Blocking."""
        with self._lock:
            data, eof = self._step()
            out = []
            end = self._position + len(data)
            if end > self._resume:
                start = max(self._position, self._resume)
                piece = data[start - self._position :] if start > self._position else data
                for i in range(0, len(piece), STREAM_CHUNK):
                    part = piece[i : i + STREAM_CHUNK]
                    out.append((encode_chunk(start + i, part, header=self._header()), len(part)))
            self._position = end
            if eof:
                final = max(self._position, self._resume)
                out.append((encode_chunk(final, b"", last=True, header=self._header()), 0))
            return out, eof

    async def messages(
        self, run: Callable[..., Awaitable[Any]], offset: int
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        """Serialized chunks from `offset` (bytes the server already holds) to the end,
        with their payload lengths. The next MiB is read and compressed on the pool while
        the current one is being sent."""
        self._resume = offset
        pending: asyncio.Future[Any] | None = asyncio.ensure_future(run(self.next_messages))
        try:
            while pending is not None:
                out, eof = await pending
                pending = None if eof else asyncio.ensure_future(run(self.next_messages))
                for message in out:
                    yield message
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
