"""One lifecycle for every long-running part (coordinator, storaged, agent, c3d).

A part is started by one builder that does its steps in order, each registering how it is
undone on an `AsyncExitStack` (`Steps`). If any step fails, everything already started is
undone in reverse (ports closed, databases closed, tasks cancelled and awaited) and the
failure propagates; nothing half-started is left behind. On success the builder hands the
stack to the `Service` it returns, whose `stop()` unwinds it once (a second call, or a
concurrent one, waits for the first and does nothing more). A service is also an async
context manager: `async with await Coordinator.start(config) as app: ...`.

`Steps.step(name)` names each step before it runs; a test passes `probe` to fail at each
named step in turn and check that nothing leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="Service")
Probe = Callable[[str], None]


class Steps:
    def __init__(self, probe: Probe | None = None) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._probe = probe
        self.done: list[str] = []

    def step(self, name: str) -> None:
        """The next step is `name` (a probe may fail it, as a test)."""
        if self._probe is not None:
            self._probe(name)
        self.done.append(name)

    def on_stop(self, undo: Callable[[], Awaitable[Any]]) -> None:
        """Undo the step just done when the service stops (or a later step fails)."""
        self._stack.push_async_callback(undo)

    def on_stop_sync(self, undo: Callable[[], Any]) -> None:
        self._stack.callback(undo)

    def task(self, coro: Awaitable[T], name: str) -> asyncio.Task[T]:
        """A background task that the service's stop cancels and waits for."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(cancel)
        return task

    def hand_over(self) -> contextlib.AsyncExitStack:
        """Everything started so far, for the service that owns it from now on."""
        return self._stack.pop_all()

    async def unwind(self) -> None:
        await self._stack.aclose()


async def build(make: Callable[[Steps], Awaitable[S]], probe: Probe | None = None) -> S:
    """Run `make`; if it fails, undo every step it did and re-raise."""
    steps = Steps(probe)
    try:
        return await make(steps)
    except BaseException:
        await steps.unwind()
        raise


class Service:
    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack
        self._stopping: asyncio.Future[None] | None = None

    @property
    def stopped(self) -> bool:
        return self._stopping is not None

    async def stop(self) -> None:
        """Undo every step of the start, last first. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stack.aclose())
        await asyncio.shield(self._stopping)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
