"""`add_storage_service` registers the Storage service with PutBlobStream receiving raw
messages (read by `c3.storage.wire.parse_chunk`), and every other method exactly as the
generated code does."""

from __future__ import annotations

from typing import Any, cast

import grpc

from c3.grpctypes import Handler
from c3.storage.wire import SERVICE_NAME
from c3.v1 import storage_pb2_grpc

# Methods whose handlers get serialized messages.
RAW_REQUEST_METHODS = ("PutBlobStream",)


class _Capture:
    """Stands in for the server while the generated code builds the service's handlers."""

    handlers: dict[str, Handler] | None = None

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = dict(handlers)


def add_storage_service(servicer: storage_pb2_grpc.StorageServicer, server: Any) -> None:
    """Register Storage like `add_StorageServicer_to_server`, except that the handlers of
    RAW_REQUEST_METHODS receive serialized requests (parsed with c3.storage.wire)."""
    capture = _Capture()
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, cast(Any, capture))
    handlers = capture.handlers
    if handlers is None:
        raise RuntimeError("the generated Storage stubs no longer register handlers by method")
    for name in RAW_REQUEST_METHODS:
        handlers[name] = handlers[name]._replace(request_deserializer=None)  # type: ignore[attr-defined]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
