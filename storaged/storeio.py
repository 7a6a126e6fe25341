"""Blocking work the BlobStore runs in its thread pool: verify and write blobs, read them
back as stored, encode and decode manifests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from c3 import manifest as mf
from c3.errors import InvalidArgument
from c3.storage import codec
from c3.storage.wire import STREAM_CHUNK
from c3.v1 import common_pb2, storage_pb2
from storaged.backend import BlobBackend, PartialWriter

# Largest stored payload sent inline by GetBlobs; bigger blobs go through GetBlobStream.
MAX_INLINE_BYTES = 8 << 20


def encode_manifest(manifest: common_pb2.Manifest) -> tuple[str, bytes, int, bytes]:
    """Validate and serialise a manifest: (digest, bytes, compression, payload)."""
    mf.validate(manifest)
    data = mf.to_bytes(manifest)
    compression, payload = codec.compress(data)
    return mf.sha256_bytes(data), data, compression, payload


def verify_and_store(
    backend: BlobBackend,
    blobs: Sequence[tuple[str, int, int, bytes]],
    new: Sequence[tuple[str, int, int, bytes]],
) -> None:
    for digest, size, compression, payload in blobs:
        codec.verify_payload(digest, size, compression, payload)
    if new:
        backend.put_many([(d, c, p) for d, _, c, p in new])


def append_partial(
    writer: PartialWriter, data: bytes | memoryview, verifier: codec.StreamVerifier | None
) -> int:
    if verifier is not None:
        verifier.update(data)
    return writer.write(data)


def verify_partial(
    backend: BlobBackend, key: str, digest: str, size: int, compression: int
) -> None:
    verifier = codec.StreamVerifier(digest, size, compression)
    with backend.read_partial(key) as f:
        while chunk := f.read(STREAM_CHUNK):
            verifier.update(chunk)
    verifier.finish()


def read_inline(
    backend: BlobBackend, size: int, digest: str, accept_zstd: bool
) -> storage_pb2.BlobData:
    stored, f = backend.open(digest)
    with f:
        if stored.stored_size > MAX_INLINE_BYTES:
            raise InvalidArgument(
                f"blob {digest[:12]} is too large for GetBlobs; use GetBlobStream"
            )
        payload = f.read()
    if stored.compression == codec.ZSTD and not accept_zstd:
        data = codec.decompress(digest, size, stored.compression, payload)
        return storage_pb2.BlobData(
            digest=digest, size=size, compression=storage_pb2.COMPRESSION_NONE, data=data
        )
    return storage_pb2.BlobData(
        digest=digest, size=size, compression=codec.Compression(stored.compression), data=payload
    )


def read_inline_many(
    backend: BlobBackend, wanted: Sequence[tuple[int, str]], accept_zstd: bool
) -> list[storage_pb2.BlobData]:
    """`read_inline` for (size, digest) pairs in one thread trip (GetBlobs of many small
    files would otherwise pay a trip per blob)."""
    return [read_inline(backend, size, digest, accept_zstd) for size, digest in wanted]


def open_reader(backend: BlobBackend, digest: str, raw: bool) -> Any:
    stored, f = backend.open(digest)
    if raw and stored.compression == codec.ZSTD:
        return codec.zstd_reader(f)
    return f


def skip_bytes(reader: Any, offset: int) -> None:
    while offset > 0:
        got = reader.read(min(offset, STREAM_CHUNK))
        if not got:
            break
        offset -= len(got)


def read_stored(backend: BlobBackend, digest: str) -> tuple[int, bytes]:
    """(compression, payload) of a blob as stored."""
    stored, f = backend.open(digest)
    with f:
        return stored.compression, f.read()


def decode_manifest(
    digest: str, size: int, compression: int, payload: bytes
) -> common_pb2.Manifest:
    return mf.from_bytes(codec.decompress(digest, size, compression, payload))
