"""One error hierarchy for every c3 component, mapped to gRPC status in one place.

Domain code raises a `C3Error` subclass; `ErrorMappingInterceptor` turns it into the
matching gRPC status on the server; `from_rpc_error` turns a status back into the same
class on the client, so a CLI can print one clear line and pick an exit code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import grpc
from grpc import aio

log = logging.getLogger(__name__)


class C3Error(Exception):
    """Base of every error a user or peer is meant to see."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(C3Error):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(C3Error):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(C3Error):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(C3Error):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(C3Error):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(C3Error):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(C3Error):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(C3Error):
    """Bytes that do not match their digest, a truncated upload."""

    code = grpc.StatusCode.DATA_LOSS


class Aborted(C3Error):
    code = grpc.StatusCode.ABORTED


class Unavailable(C3Error):
    """A service could not be reached."""

    code = grpc.StatusCode.UNAVAILABLE
    exit_code = 3


class DeadlineExceeded(C3Error):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    exit_code = 3


class Cancelled(C3Error):
    """The other side cancelled the call (a server shutting down)."""

    code = grpc.StatusCode.CANCELLED
    exit_code = 3


class Internal(C3Error):
    code = grpc.StatusCode.INTERNAL


class ConfigError(InvalidArgument):
    """A problem in a user's file: the message names file, line and field."""


_BY_CODE: dict[grpc.StatusCode, type[C3Error]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        DataLoss,
        Aborted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> C3Error:
    """The C3Error a gRPC failure stands for (client side)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    cls = _BY_CODE.get(code, C3Error)
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "service unavailable"
    return cls(details or code.name.lower())


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except C3Error as exc:
            await context.abort(exc.code, exc.message)

    return wrapper


def _wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
        try:
            async for item in behavior(request, context):
                yield item
        except C3Error as exc:
            await context.abort(exc.code, exc.message)

    return wrapper


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps C3Error raised by any handler to its gRPC status; everything else stays INTERNAL
    (and is logged with its traceback, because it is a bug)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class Unimplemented(C3Error):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE[Unimplemented.code] = Unimplemented
