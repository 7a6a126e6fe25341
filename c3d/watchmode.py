"""Deploy on save: every settled change pushes, submits, and supersedes the previous run.

At most one deployment (push, then submit) is in flight: a change that lands while one is
still pushing restarts it with the newer tree (changes coalesce, a half-old tree never
ships); one that lands during its submit waits for the coordinator's answer, so every job
it accepted is known and the next run supersedes it. The current run is followed until a
newer one is submitted; a change that ships nothing (an editor's temp file that came and
went) starts no run and leaves the current one going.

Events reach the client through one queue, tagged by the task that made them, so nothing
of a superseded run is shown after the next run's header.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from c3.errors import C3Error, NotFound
from c3.v1 import common_pb2, daemon_pb2
from c3d.connections import Connections
from c3d.pipeline import Deployment, Pusher
from c3d.projects import Project

_CHANGE = object()
_DONE = object()
# A file's mtime stands for the save when it is at most this much older than the watcher's
# notice of it (a copy that kept an old mtime does not).
SAVE_MTIME_SLACK_S = 5.0
# Paths whose mtime is looked at to date a save (a checkout touching thousands is dated by
# the notice instead).
SAVE_MTIME_PATHS = 200


@dataclass
class WatchState:
    """Per project: paused or not, and what changed meanwhile."""

    paused: bool = False
    sessions: int = 0
    pending: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def saved_at(root: Path, paths: Collection[str], noticed: float) -> float:
    """When the newest of `paths` was saved (blocking: stats files), as a wall-clock
    time; `noticed` (when the watcher reported them) when no mtime is believable."""
    newest = 0.0
    for rel in list(paths)[:SAVE_MTIME_PATHS]:
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(root / rel).st_mtime)
    if noticed - SAVE_MTIME_SLACK_S <= newest <= time.time():
        return newest
    return noticed


async def watch(
    request: daemon_pb2.WatchRequest,
    pusher: Pusher,
    connections: Connections,
    project: Project,
    state: WatchState,
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    queue: asyncio.Queue[tuple[object, object]] = asyncio.Queue()
    changed: set[str] = set()
    noticed = time.time()

    def on_change(paths: set[str]) -> None:
        nonlocal noticed
        changed.update(paths)
        noticed = time.time()
        queue.put_nowait((None, _CHANGE))

    def on_resume() -> None:
        queue.put_nowait((None, _CHANGE))

    deploy_request = daemon_pb2.DeployRequest(
        project_dir=request.project_dir, follow=True, provider=request.provider,
        api_key=request.api_key, coordinator_address=request.coordinator_address,
        tls=request.tls, command=request.command,
    )
    run = 0
    latest_job: common_pb2.Job | None = None  # the newest job submitted: the next supersedes it
    touched: set[str] = set()  # saved since the current run was submitted
    deploying: asyncio.Task[None] | None = None  # pushing or submitting the next run
    following: asyncio.Task[None] | None = None  # the current run, after its header
    runs: dict[asyncio.Task[None], Deployment] = {}

    def submitted(job: common_pb2.Job) -> None:
        nonlocal latest_job
        latest_job = job

    def submitting() -> None:
        """The next run is about to supersede the current one: stop showing it."""
        nonlocal following
        stop(following)
        following = None

    async def one_run(deployment: Deployment) -> None:
        me = asyncio.current_task()
        try:
            async for event in deployment.submit():
                queue.put_nowait((me, event))
            if not deployment.skipped:
                async for event in deployment.follow():
                    queue.put_nowait((me, event))
        except C3Error as exc:
            queue.put_nowait((me, daemon_pb2.DeployEvent(error=f"deploy failed: {exc}")))
        queue.put_nowait((me, _DONE))

    async def start_run(paths: set[str], *, first: bool) -> None:
        nonlocal deploying
        if deploying is not None and not deploying.done():
            deploying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deploying
        touched.update(paths)
        reference = await asyncio.to_thread(saved_at, project.root, sorted(touched), noticed)
        deployment = Deployment(
            deploy_request, pusher, connections, run=run + 1, reference=reference,
            since="watch" if first else "save", supersedes=latest_job,
            on_submitted=submitted, on_submitting=submitting, touched=frozenset(touched), skip_unchanged=not first,
        )
        deploying = asyncio.create_task(one_run(deployment))
        runs[deploying] = deployment

    def stop(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            runs.pop(task, None)

    project.listeners.add(on_change)
    resume_waiter = asyncio.create_task(_resume_signals(state, on_resume))
    try:
        await start_run(set(), first=True)
        while True:
            source, item = await queue.get()
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
                await start_run(paths, first=False)
            elif item is _DONE:
                if deploying is not None and source is deploying:
                    runs.pop(deploying, None)
                    deploying = None
            elif deploying is not None and source is deploying:
                assert isinstance(item, daemon_pb2.DeployEvent)
                if item.HasField("header"):  # submitted: this is the current run now
                    following, deploying = deploying, None
                    run = item.header.run
                    touched.difference_update(runs[following].touched)
                yield item
            elif source is following:
                assert isinstance(item, daemon_pb2.DeployEvent)
                yield item
    finally:
        project.listeners.discard(on_change)
        resume_waiter.cancel()
        stop(deploying)
        stop(following)


async def _resume_signals(state: WatchState, on_resume: Callable[[], None]) -> None:
    """Turns a resume (state.wake) into a change signal when changes piled up while paused."""
    while True:
        await state.wake.wait()
        state.wake.clear()
        if not state.paused and state.pending:
            on_resume()
