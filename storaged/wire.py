"""Lean decoding of BlobChunk, the message of streamed uploads.

Parsed by protobuf, each 1 MiB payload would be copied into the message and once more
when read back out (fresh 1 MiB buffers: a quarter of storaged's CPU on a large upload);
here a chunk's data is a memoryview of the received bytes instead. Any valid encoding is
read as protobuf reads it (fields in any order, the last value of a scalar wins, unknown
fields skipped); anything else is refused as malformed.

`add_storage_service` registers the Storage service with PutBlobStream receiving raw
messages, and every other method exactly as the generated code does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from c3.errors import InvalidArgument
from c3.v1 import storage_pb2, storage_pb2_grpc

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["Storage"].full_name
# Methods whose handlers get serialized messages.
RAW_REQUEST_METHODS = ("PutBlobStream",)

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


class _Capture:
    """Stands in for the server while the generated code builds the service's handlers."""

    handlers: dict[str, grpc.RpcMethodHandler] | None = None

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = dict(handlers)


def add_storage_service(servicer: storage_pb2_grpc.StorageServicer, server: Any) -> None:
    """Register Storage like `add_StorageServicer_to_server`, except that the handlers of
    RAW_REQUEST_METHODS receive serialized requests (parsed by this module)."""
    capture = _Capture()
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, capture)
    handlers = capture.handlers
    if handlers is None:
        raise RuntimeError("the generated Storage stubs no longer register handlers by method")
    for name in RAW_REQUEST_METHODS:
        handlers[name] = handlers[name]._replace(request_deserializer=None)  # type: ignore[attr-defined]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
