"""Who may call what, checked in one place for every method of a server.

A server gives `AuthInterceptor` a table: full method name ("/c3.v1.Coordinator/SubmitJob")
-> a rule. The rule checks the call's credentials (and, for a method with a single request,
what the request asks for: a path) and returns who is calling (a principal:
an API key's caller, an agent, a storage token's claims; None for public methods) or raises
a C3Error to refuse it. The handler then runs with the principal in a context variable
(`principal()`), so no handler checks credentials itself. A method the server serves that
the table does not name is refused: a new RPC is closed until someone decides who may call
it. Runs inside `ErrorMappingInterceptor` (c3/grpcutil.py), so a refusal is a gRPC status.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from grpc import aio

from c3.errors import PermissionDenied, Unauthenticated, rewrap_handler
from c3.grpctypes import Context, Handler

# (context, full method name, the request; None when the client streams its requests)
Rule = Callable[[Context, str, Any], object]
T = TypeVar("T")

_principal: contextvars.ContextVar[object] = contextvars.ContextVar("c3_principal")

# Every server's health and reflection services answer anyone.
HEALTH_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
)
REFLECTION_METHODS = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)


def public(context: Context, method: str, request: Any) -> None:
    return None


PUBLIC_METHODS: dict[str, Rule] = {m: public for m in (*HEALTH_METHODS, *REFLECTION_METHODS)}


def principal(kind: type[T]) -> T:
    """Who is calling the running handler, as its method's rule found them."""
    found = _principal.get(None)
    if not isinstance(found, kind):
        raise Unauthenticated("this call carries no credentials of the kind it needs")
    return found


def _refuse(method: str) -> Rule:
    def rule(context: Context, _: str, request: Any) -> object:
        raise PermissionDenied(f"{method} is open to no caller (it has no permission entry)")

    return rule


def _guard_unary(rule: Rule, method: str) -> Callable[[Callable[..., Any], bool], Any]:
    def guard(behavior: Callable[..., Awaitable[Any]], streamed: bool) -> Any:
        async def wrapper(request: Any, context: Context) -> Any:
            # Each call runs in a task of its own: the variable is this call's alone.
            _principal.set(rule(context, method, None if streamed else request))
            return await behavior(request, context)

        return wrapper

    return guard


def _guard_stream(rule: Rule, method: str) -> Callable[[Callable[..., Any], bool], Any]:
    def guard(behavior: Callable[..., AsyncIterator[Any]], streamed: bool) -> Any:
        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            _principal.set(rule(context, method, None if streamed else request))
            async for item in behavior(request, context):
                yield item

        return wrapper

    return guard


class AuthInterceptor(aio.ServerInterceptor):
    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self.rules = dict(rules)
        # method -> (the handler grpc gave, the guarded one): built once per method.
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # not served here: grpc answers UNIMPLEMENTED
        method: str = handler_call_details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        rule = self.rules.get(method) or _refuse(method)
        guarded = rewrap_handler(handler, _guard_unary(rule, method), _guard_stream(rule, method))
        self._guarded[method] = (handler, guarded)
        return guarded
