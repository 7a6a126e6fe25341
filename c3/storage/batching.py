"""Cutting transfers into bounded groups, and running the groups concurrently with one
clear error (used by both ends: storaged groups the blobs of a GetBlobs reply)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def batches(
    items: Sequence[T], max_bytes: int, max_count: int, size: Callable[[T], int]
) -> list[list[T]]:
    """`items` in order, cut into groups of at most `max_bytes` (one item may exceed it
    alone) and `max_count` items."""
    groups: list[list[T]] = []
    current: list[T] = []
    current_bytes = 0
    for item in items:
        n = size(item)
        if current and (current_bytes + n > max_bytes or len(current) >= max_count):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += n
    if current:
        groups.append(current)
    return groups


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup that raises its first failure itself, not an ExceptionGroup (callers
    and users expect one clear error); the other tasks are cancelled."""
    try:
        async with asyncio.TaskGroup() as tg:
            yield tg
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def run_all(coros: Sequence[Coroutine[Any, Any, Any]]) -> None:
    """Run concurrently; on the first failure cancel the rest and raise that failure
    itself (not an ExceptionGroup: callers and users expect one clear error)."""
    async with task_group() as tg:
        for coro in coros:
            tg.create_task(coro)
