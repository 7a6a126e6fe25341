"""The gRPC types c3's handlers and interceptors share (grpc's own are generic over the
request and response, which a handler's own signature already names)."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from grpc import aio

# What every handler is given; a string so that aliases built from it (auth rules) are
# plain objects at run time.
Context: TypeAlias = "aio.ServicerContext[Any, Any]"
# A method's handler as server interceptors see it (any request and response type).
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
