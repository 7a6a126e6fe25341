"""One error hierarchy for every c3 component, mapped to gRPC status in one place.

Domain code raises a `C3Error` subclass; `ErrorMappingInterceptor` turns it into the
matching gRPC status on the server; on the client `ErrorMappingClientInterceptor` (every
channel made by `c3.grpcutil.channel`) turns a status back into the same class, so a CLI
can print one clear line and pick an exit code. A failure of the connection itself (the
server stopped, crashed or cannot be reached) becomes `Unavailable` naming the service
and its address, never the transport's own text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, ClassVar

import grpc
from grpc import aio

from c3.grpctypes import Context, Handler

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


# What grpc says when the connection itself broke, whatever status it files it under.
_TRANSPORT_FAILURE = re.compile(
    r"transport|socket closed|stream removed|connection reset|broken pipe|rst_stream|goaway"
    r"|end of tcp stream|failed to connect|connection refused|handshake",
    re.IGNORECASE,
)


def from_rpc_error(
    error: grpc.RpcError, service: str = "", address: str = "", hint: str = ""
) -> C3Error:
    """The C3Error a gRPC failure stands for (client side). With `service` and `address`,
    a broken or refused connection reads `<service> at <address> is unreachable (hint)`."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    transport = code == grpc.StatusCode.UNAVAILABLE or (
        code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        and bool(details)
        and bool(_TRANSPORT_FAILURE.search(details or ""))
    )
    if transport and service:
        where = f"{service} at {address}" if address else service
        return Unavailable(f"{where} is unreachable{f' ({hint})' if hint else ''}")
    if transport:
        return Unavailable(details or "service unavailable")
    cls = _BY_CODE.get(code, C3Error)
    return cls(details or code.name.lower())


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: Context) -> Any:
        try:
            return await behavior(request, context)
        except C3Error as exc:
            await context.abort(exc.code, exc.message)

    return wrapper


def _wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: Context) -> Any:
        try:
            async for item in behavior(request, context):
                yield item
        except C3Error as exc:
            await context.abort(exc.code, exc.message)

    return wrapper


# (behavior, whether the client streams its requests) -> the behavior that replaces it
Rewrap = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def rewrap_handler(handler: Handler, unary: Rewrap, stream: Rewrap) -> Handler:
    """The same method handler with its behavior replaced: by `unary(behavior, streamed)`
    for a method with one answer, by `stream(...)` for one that streams its answers."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, unary, False),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, unary, True),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, stream, False),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, stream, True),
    )
    for attribute, make, wrap, streamed in kinds:
        behavior = getattr(handler, attribute)
        if behavior:
            return make(
                wrap(behavior, streamed),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps C3Error raised by any handler to its gRPC status. Anything else is a bug: grpc
    logs it with its traceback and the caller gets UNKNOWN."""

    def __init__(self) -> None:
        # method -> (the handler below, the mapped one): built once per method.
        self._mapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        known = self._mapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        mapped = rewrap_handler(handler, lambda b, _: _wrap_unary(b), lambda b, _: _wrap_stream(b))
        self._mapped[method] = (handler, mapped)
        return mapped


class Unimplemented(C3Error):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE[Unimplemented.code] = Unimplemented


class ClientCalls:
    """What every call on a client channel gets (`client_interceptors`): a failure raises the
    C3Error its status stands for, a broken connection naming `service` at `address` (and
    `hint`, what to do about it); calls carry `metadata` (credentials) and, when they name
    none, `timeout` if they have a single answer. So callers make plain typed stub calls."""

    def __init__(
        self,
        service: str,
        address: str,
        hint: str = "",
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float | None = None,
    ) -> None:
        self.service, self.address, self.hint = service, address, hint
        self._metadata = metadata
        self._timeout = timeout

    def error(self, exc: grpc.RpcError) -> C3Error:
        return from_rpc_error(exc, self.service, self.address, self.hint)

    def details(self, details: Any, unary_response: bool) -> Any:
        if not self._metadata and self._timeout is None:
            return details
        metadata = aio.Metadata(*self._metadata, *(details.metadata or ()))
        timeout = details.timeout
        if timeout is None and unary_response:
            timeout = self._timeout
        return details._replace(metadata=metadata, timeout=timeout)

    async def stream(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for response in call:
                yield response
        except grpc.RpcError as exc:
            raise self.error(exc) from None


class _MappedUnaryCall:
    """A call whose awaited failure is a C3Error; everything else is the call's."""

    def __init__(self, call: Any, calls: ClientCalls) -> None:
        self._call = call
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self._call.__await__())
        except grpc.RpcError as exc:
            raise self._calls.error(exc) from None


class _Intercept:
    def __init__(self, calls: ClientCalls) -> None:
        self._calls = calls

    async def _one_answer(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        call = await continuation(self._calls.details(details, True), request)
        try:
            return await call
        except grpc.RpcError as exc:
            raise self._calls.error(exc) from None

    async def _streamed_one_answer(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        call = await continuation(self._calls.details(details, True), requests)
        return _MappedUnaryCall(call, self._calls)  # a response here would not be a call

    async def _answers(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return self._calls.stream(await continuation(self._calls.details(details, False), request))


class _UnaryUnary(_Intercept, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._one_answer(continuation, client_call_details, request)


class _UnaryStream(_Intercept, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await self._answers(continuation, client_call_details, request)


class _StreamUnary(_Intercept, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: aio.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await self._streamed_one_answer(continuation, client_call_details, request_iterator)


class _StreamStream(_Intercept, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: aio.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await self._answers(continuation, client_call_details, request_iterator)


def client_interceptors(calls: ClientCalls) -> list[aio.ClientInterceptor]:
    """One interceptor per kind of call (a grpc channel files each under one kind only)."""
    return [_UnaryUnary(calls), _UnaryStream(calls), _StreamUnary(calls), _StreamStream(calls)]
