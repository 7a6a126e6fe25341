"""The status of a gRPC call a test expects to fail."""

from __future__ import annotations

from typing import Any

import grpc
import pytest


async def code_of(call: Any) -> grpc.StatusCode | None:
    """The status code `call` ends with — a unary call awaited, a stream read to its end;
    None when it succeeds."""
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return None


async def expect_code(code: grpc.StatusCode, call: Any) -> str:
    """Assert `call` fails with `code`; returns the error's details."""
    with pytest.raises(grpc.RpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())
