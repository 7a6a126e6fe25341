"""Deploy on save: every settled change pushes, submits, and supersedes the previous run.

Events of all runs reach the client through one queue, tagged by run so nothing from a
superseded run is shown after the separator of the next one. A change that lands while a
push is still uploading restarts the push, so a half-old tree never ships.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from c3.errors import C3Error, NotFound
from c3.v1 import common_pb2, daemon_pb2
from c3d.connections import Connections
from c3d.pipeline import Pusher, deploy
from c3d.projects import Project

_CHANGE = object()
_RUN_DONE = object()


@dataclass
class WatchState:
    """Per project: paused or not, and what changed meanwhile."""

    paused: bool = False
    sessions: int = 0
    pending: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def describe(paths: set[str], limit: int = 3) -> str:
    shown = sorted(paths)[:limit]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


async def watch(
    request: daemon_pb2.WatchRequest,
    pusher: Pusher,
    connections: Connections,
    project: Project,
    state: WatchState,
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    changed: set[str] = set()

    def on_change(paths: set[str]) -> None:
        changed.update(paths)
        queue.put_nowait((0, _CHANGE))

    def on_resume() -> None:
        queue.put_nowait((0, _CHANGE))

    deploy_request = daemon_pb2.DeployRequest(
        project_dir=request.project_dir, follow=True, provider=request.provider,
        api_key=request.api_key, coordinator_address=request.coordinator_address,
        tls=request.tls,
    )
    run = 0
    task: asyncio.Task[None] | None = None
    last_job: common_pb2.Job | None = None

    async def one_run(number: int, supersedes: common_pb2.Job | None) -> None:
        nonlocal last_job
        try:
            async for event in deploy(deploy_request, pusher, connections, supersedes=supersedes):
                if event.HasField("submitted"):
                    last_job = event.submitted
                queue.put_nowait((number, event))
        except C3Error as exc:
            queue.put_nowait((number, daemon_pb2.DeployEvent(notice=f"deploy failed: {exc}")))
        queue.put_nowait((number, _RUN_DONE))

    async def start_run(reason: str) -> int:
        nonlocal task, run
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run += 1
        queue.put_nowait((run, daemon_pb2.DeployEvent(notice=f"── run {run}: {reason} ──")))
        task = asyncio.create_task(one_run(run, last_job))
        return run

    project.listeners.add(on_change)
    resume_waiter = asyncio.create_task(_resume_signals(state, on_resume))
    try:
        await start_run("watching " + request.project_dir)
        while True:
            number, item = await queue.get()
            if item is _CHANGE:
                if not project.root.is_dir():
                    raise NotFound(
                        f"{project.root} was deleted or moved; stopped watching it "
                        "(run `c3ctl watch` again where the project is now)"
                    )
                paths = changed | state.pending
                changed.clear()
                if state.paused or not paths:
                    state.pending = paths
                    continue
                state.pending = set()
                await start_run(f"changed {describe(paths)}")
            elif item is _RUN_DONE:
                continue
            elif number == run:
                assert isinstance(item, daemon_pb2.DeployEvent)
                yield item
    finally:
        project.listeners.discard(on_change)
        resume_waiter.cancel()
        if task is not None:
            task.cancel()


async def _resume_signals(state: WatchState, on_resume: object) -> None:
    """Turns a resume (state.wake) into a change signal when changes piled up while paused."""
    assert callable(on_resume)
    while True:
        await state.wake.wait()
        state.wake.clear()
        if not state.paused and state.pending:
            on_resume()
