"""The Storage wire format, shared by the client and storaged: how blobs travel (small
ones batched, large ones streamed), and the hand-built encoding of the upload messages.

Built and parsed by protobuf, every payload would be copied several times, and the
serializing copies happen on the event loop (where gRPC serializes). The client's encoders
here write exactly the bytes protobuf writes, from one copy of each payload, on its thread
pool; storaged reads a BlobChunk with `parse_chunk`, its data a memoryview of the received
bytes instead of a fresh 1 MiB buffer (a quarter of storaged's CPU on a large upload). Any
valid encoding is read as protobuf reads it (fields in any order, the last value of a
scalar wins, unknown fields skipped); anything else is refused as malformed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from c3.errors import InvalidArgument
from c3.v1 import storage_pb2

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["Storage"].full_name
# Blobs up to this size travel in PutBlobs/GetBlobs batches; larger ones are streamed
# (BlobChunk messages of at most STREAM_CHUNK payload bytes).
SMALL_BLOB_MAX = 1 << 20
STREAM_CHUNK = 1 << 20
# Payload bytes of one PutBlobs or GetBlobs batch.
BATCH_BYTES = 4 << 20


def method_path(name: str) -> str:
    """The gRPC path of a Storage method ("/c3.v1.Storage/PutBlobs")."""
    return f"/{SERVICE_NAME}/{name}"


# Encoding (the client) -------------------------------------------------------------------


def _encode_varint(n: int) -> bytes:
    """Protobuf's base-128 varint; the sizes of a blob batch take one to three bytes."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _blob_fields(digest: str, size: int, compression: int) -> bytes:
    """Fields 1 (digest), 2 (size) and 3 (compression), as both BlobData and BlobChunk
    number them; zeros omitted, as protobuf's own encoder does."""
    head = b"\x0a" + _encode_varint(len(digest)) + digest.encode("ascii")
    if size:
        head += b"\x10" + _encode_varint(size)
    if compression:
        head += b"\x18" + _SMALL_VARINTS[compression]
    return head


def encode_put_blobs(blobs: Iterable[tuple[str, int, int, bytes]]) -> bytes:
    """The serialized PutBlobsRequest of (digest, size, compression, payload) blobs, built
    with one copy of each payload. Building BlobData messages and serializing them would
    copy every payload twice more, and on the event loop (where gRPC serializes)."""
    parts: list[bytes] = []
    append = parts.append
    for digest, size, compression, payload in blobs:
        # BlobData fields 1-3 as below, 4 (data).
        head = _blob_fields(digest, size, compression)
        n = len(payload)
        if n:
            head += b"\x22" + _encode_varint(n)
        # PutBlobsRequest field 1 (blobs): one length-delimited BlobData each.
        append(b"\x0a" + _encode_varint(len(head) + n) + head)
        append(payload)
    return b"".join(parts)


def encode_chunk(
    offset: int,
    data: bytes | memoryview,
    *,
    last: bool = False,
    header: tuple[str, int, int, int] | None = None,
) -> bytes:
    """A serialized BlobChunk (one copy of `data`); `header` is (digest, size,
    compression, total) for the first chunk of a stream."""
    head = tail = b""
    if header is not None:
        digest, size, compression, total = header
        if total:
            tail = b"\x30" + _encode_varint(total)
        head = _blob_fields(digest, size, compression)
    if offset:
        head += b"\x20" + _encode_varint(offset)
    if data:
        head += b"\x2a" + _encode_varint(len(data))
    if last:
        tail += b"\x38\x01"
    return b"".join((head, data, tail))


# Decoding (storaged) ---------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(slots=True)
class Chunk:
    """A BlobChunk, with `data` a view of the received message."""

    digest: str = ""
    size: int = 0
    compression: int = 0
    offset: int = 0
    data: memoryview | bytes = b""
    total: int = 0
    last: bool = False


def _malformed(what: str) -> InvalidArgument:
    return InvalidArgument(f"malformed {what} message: not a valid protobuf encoding")


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _malformed(what)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def _spans(buf: bytes, pos: int, end: int, what: str) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value, end) of the fields in buf[pos:end]. For a
    length-delimited field `value` is where its bytes start and `end` where they end; for a
    varint `value` is its value; fixed-width fields (unused here) are skipped."""
    while pos < end:
        key, pos = _varint(buf, pos, what)
        number, wire_type = key >> 3, key & 7
        value = 0
        if wire_type == _VARINT:
            value, pos = _varint(buf, pos, what)
        elif wire_type == _LENGTH:
            length, value = _varint(buf, pos, what)
            pos = value + length
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        else:  # groups: never used by these messages
            raise _malformed(what)
        if pos > end or number == 0:
            raise _malformed(what)
        yield number, wire_type, value, pos


def _text(buf: bytes, start: int, end: int, what: str) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(what) from None


def _expect(wire_type: int, wanted: int, what: str) -> None:
    if wire_type != wanted:
        raise _malformed(what)


def parse_chunk(message: bytes) -> Chunk:
    """A serialized BlobChunk -> Chunk."""
    what = "BlobChunk"
    chunk = Chunk()
    for number, wire_type, value, stop in _spans(message, 0, len(message), what):
        if number == 1:
            _expect(wire_type, _LENGTH, what)
            chunk.digest = _text(message, value, stop, what)
        elif number == 2:
            _expect(wire_type, _VARINT, what)
            chunk.size = value
        elif number == 3:
            _expect(wire_type, _VARINT, what)
            chunk.compression = value
        elif number == 4:
            _expect(wire_type, _VARINT, what)
            chunk.offset = value
        elif number == 5:
            _expect(wire_type, _LENGTH, what)
            chunk.data = memoryview(message)[value:stop]
        elif number == 6:
            _expect(wire_type, _VARINT, what)
            chunk.total = value
        elif number == 7:
            _expect(wire_type, _VARINT, what)
            chunk.last = bool(value)
    return chunk
