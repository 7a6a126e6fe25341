"""Blob compression and verification, shared by storaged and its client.

A blob is named by the SHA-256 of its uncompressed bytes. On the wire and on disk it is
zstd-compressed, or raw when compression does not pay. Every reader and writer checks the
bytes against the digest with `verify_payload` / `StreamVerifier`: blocking, CPU-bound
helpers meant for a thread pool (zstd and hashlib release the GIL).
"""

from __future__ import annotations

import hashlib
import threading
from typing import BinaryIO

import zstandard

from c3.errors import DataLoss, InvalidArgument
from c3.v1 import storage_pb2

ZSTD_LEVEL = 1
NONE: int = int(storage_pb2.COMPRESSION_NONE)
ZSTD: int = int(storage_pb2.COMPRESSION_ZSTD)
Compression = storage_pb2.Compression.ValueType
# Below this size compression never pays for its frame header.
MIN_COMPRESS_BYTES = 128
# Compressed output must be at most this share of the input to be worth keeping.
PAYS_RATIO = 0.95
PROBE_BYTES = 4096

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # ZstdCompressor objects are not thread-safe: one per thread.
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def compress(data: bytes) -> tuple[int, bytes]:
    """(compression, payload): zstd when it pays, else the raw bytes."""
    if len(data) < MIN_COMPRESS_BYTES:
        return NONE, data
    cctx = _compressor()
    if len(data) > 4 * PROBE_BYTES:
        # Probe the middle: random or already-compressed data (half of a typical tree)
        # costs one small attempt instead of a full compression that is thrown away.
        middle = len(data) // 2
        probe = data[middle : middle + PROBE_BYTES]
        if len(cctx.compress(probe)) > len(probe) * PAYS_RATIO:
            return NONE, data
    packed = cctx.compress(data)
    if len(packed) > len(data) * PAYS_RATIO:
        return NONE, data
    return ZSTD, packed


def new_stream_compressor() -> zstandard.ZstdCompressionObj:
    """A streaming compressor; same input in the same chunks gives the same bytes, which is
    what lets an interrupted streamed upload resume at a byte offset."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()


def zstd_reader(f: BinaryIO) -> BinaryIO:
    """A file-like reader of the decompressed content of a zstd file object."""
    return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)


def check_compression(compression: int) -> int:
    if compression not in (NONE, ZSTD):
        raise InvalidArgument(f"unknown compression {compression}: use NONE or ZSTD")
    return compression


class _HashSink:
    """Receives decompressed output: hashes it, counts it, refuses more than expected."""

    def __init__(self, digest: str, size: int, keep: bool, out: BinaryIO | None) -> None:
        self.out = out
        self.digest = digest
        self.size = size
        self.count = 0
        self.sha = hashlib.sha256()
        self.kept: list[bytes] | None = [] if keep else None

    def write(self, data: bytes | memoryview) -> int:
        self.count += len(data)
        if self.count > self.size:
            raise DataLoss(
                f"blob {self.digest[:12]}: content is longer than the declared {self.size} bytes"
            )
        self.sha.update(data)
        if self.out is not None:
            self.out.write(data)
        if self.kept is not None:
            self.kept.append(bytes(data))
        return len(data)


class StreamVerifier:
    """Feed payload chunks in order; `finish` raises DataLoss unless the uncompressed bytes
    have exactly the declared size and digest."""

    def __init__(
        self,
        digest: str,
        size: int,
        compression: int,
        *,
        keep: bool = False,
        out: BinaryIO | None = None,
    ) -> None:
        """`keep` collects the uncompressed bytes for `finish`; `out` receives them as they
        are produced (a download writing to a temp file)."""
        self.digest = digest
        self.size = size
        self._sink = _HashSink(digest, size, keep, out)
        self._writer = (
            # A fresh context: a stream outlives one call and may move between threads.
            zstandard.ZstdDecompressor().stream_writer(
                self._sink,  # type: ignore[arg-type]  # any object with write() works
                write_size=1 << 17,
                closefd=False,
            )
            if compression == ZSTD
            else None
        )

    def update(self, chunk: bytes | memoryview) -> None:
        try:
            if self._writer is None:
                self._sink.write(chunk)
            else:
                self._writer.write(chunk)
        except zstandard.ZstdError as exc:
            raise DataLoss(f"blob {self.digest[:12]}: corrupt zstd data ({exc})") from exc

    def finish(self) -> bytes:
        """Check and return the uncompressed bytes (b"" unless built with keep=True)."""
        if self._writer is not None:
            try:
                self._writer.flush()
            except zstandard.ZstdError as exc:
                raise DataLoss(f"blob {self.digest[:12]}: corrupt zstd data ({exc})") from exc
        if self._sink.count != self.size:
            raise DataLoss(
                f"blob {self.digest[:12]}: got {self._sink.count} bytes, declared {self.size}"
                " (truncated or corrupt upload)"
            )
        actual = self._sink.sha.hexdigest()
        if actual != self.digest:
            raise DataLoss(
                f"blob content does not match its digest: declared {self.digest}, got {actual}"
            )
        return b"".join(self._sink.kept or ())


def _check_content(digest: str, size: int, data: bytes) -> None:
    if len(data) != size:
        raise DataLoss(
            f"blob {digest[:12]}: got {len(data)} bytes, declared {size}"
            " (truncated or corrupt upload)"
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise DataLoss(f"blob content does not match its digest: declared {digest}, got {actual}")


def _decompress_whole(digest: str, size: int, payload: bytes) -> bytes:
    """One zstd frame holding exactly `size` bytes, decompressed in one call (the fast
    path for small blobs: no stream objects). Bounded: a frame that declares another size
    is refused before anything is allocated."""
    try:
        declared = zstandard.frame_content_size(payload)
        if declared not in (size, -1):
            raise DataLoss(
                f"blob {digest[:12]}: compressed frame holds {declared} bytes, declared {size}"
            )
        if declared == -1:  # size not in the frame header: stream it, bounded by `size`
            verifier = StreamVerifier(digest, size, ZSTD, keep=True)
            verifier.update(payload)
            return verifier.finish()
        dctx = getattr(_local, "dctx", None)
        if dctx is None:
            dctx = _local.dctx = zstandard.ZstdDecompressor()
        obj = dctx.decompressobj()
        data = obj.decompress(payload)
    except zstandard.ZstdError as exc:
        raise DataLoss(f"blob {digest[:12]}: corrupt zstd data ({exc})") from exc
    if not obj.eof or obj.unused_data:
        raise DataLoss(f"blob {digest[:12]}: truncated or trailing zstd data")
    return data


def verify_payload(digest: str, size: int, compression: int, payload: bytes) -> None:
    decompress(digest, size, compression, payload)


def decompress(digest: str, size: int, compression: int, payload: bytes) -> bytes:
    """The verified uncompressed bytes of a payload (bounded by `size`: no zip bombs)."""
    data = payload if compression == NONE else _decompress_whole(digest, size, payload)
    _check_content(digest, size, data)
    return data
