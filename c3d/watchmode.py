"""Deploy on save: every settled change pushes, submits, and supersedes the previous run.

Never more than one superseding run is in flight: a change that lands while a deployment
is still pushing restarts it with the newer tree (a half-old tree never ships); one that
lands while it submits, or while its job has not started yet, waits for that job to start
and then deploys with every save made meanwhile (changes coalesce: a tree changing 100
times a second makes one run per start of the agent, not one per change). The current run
is followed until a newer one is submitted; a change that ships nothing (an editor's temp
file that came and went) starts no run and leaves the current one going.

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
_RETRY = object()
# Saves made while the newest run has not started wait for it to start (never more than
# one superseding run in flight), but no longer than this: a run that waits for capacity
# is then superseded as it waits, so the newest code is what gets the GPU.
START_WAIT_S = 5.0
_NOT_STARTED = (common_pb2.JOB_STATE_PENDING, common_pb2.JOB_STATE_SCHEDULING)
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


class _Session:
    """One `Watch` call: the deployment in flight, the run followed, the saves waiting."""

    def __init__(self, request: daemon_pb2.WatchRequest, pusher: Pusher,
                 connections: Connections, project: Project, state: WatchState) -> None:
        self.pusher, self.connections, self.project, self.state = pusher, connections, project, state
        self.deploy_request = daemon_pb2.DeployRequest(
            project_dir=request.project_dir, follow=True, provider=request.provider,
            api_key=request.api_key, coordinator_address=request.coordinator_address,
            tls=request.tls, command=request.command,
        )
        self.queue: asyncio.Queue[tuple[object, object]] = asyncio.Queue()
        self.changed: set[str] = set()  # reported by the watcher, not yet looked at
        self.noticed = time.time()
        self.run = 0
        self.touched: set[str] = set()  # saved since the current run was submitted
        self.deferred = False  # saves wait for the run in flight to start
        self.retry: asyncio.TimerHandle | None = None
        # The newest job submitted (the next run supersedes it), when, and whether it started.
        self.latest_job: common_pb2.Job | None = None
        self.latest_at = 0.0
        self.latest_started = False
        self.deploying: asyncio.Task[None] | None = None  # pushing or submitting the next run
        self.submitting = False  # ... and past its push: the submit call is under way
        self.following: asyncio.Task[None] | None = None  # the current run, after its header
        self.runs: dict[asyncio.Task[None], Deployment] = {}

    # -- callbacks --------------------------------------------------------------------
    def on_change(self, paths: set[str]) -> None:
        self.changed.update(paths)
        self.noticed = time.time()
        self.queue.put_nowait((None, _CHANGE))

    def on_resume(self) -> None:
        self.queue.put_nowait((None, _CHANGE))

    def _submitted(self, job: common_pb2.Job) -> None:
        self.latest_job, self.latest_at, self.latest_started = job, time.monotonic(), False

    def _submitting(self) -> None:
        """The next run is about to supersede the current one: stop showing it."""
        self.submitting = True
        self._stop(self.following)
        self.following = None

    def _stop(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            self.runs.pop(task, None)

    # -- runs -------------------------------------------------------------------------
    async def _one_run(self, deployment: Deployment) -> None:
        me = asyncio.current_task()
        try:
            async for event in deployment.submit():
                self.queue.put_nowait((me, event))
            if not deployment.skipped:
                async for event in deployment.follow():
                    self.queue.put_nowait((me, event))
        except C3Error as exc:
            self.queue.put_nowait((me, daemon_pb2.DeployEvent(error=f"deploy failed: {exc}")))
        self.queue.put_nowait((me, _DONE))

    async def start_run(self, paths: set[str], *, first: bool = False) -> None:
        """Deploy what was saved, unless a run is still in flight: then the saves wait for
        it to start (its submit is never interrupted; a push still going is restarted with
        the newer tree)."""
        self.touched.update(paths)
        if self.deploying is not None and not self.deploying.done():
            if self.submitting:
                self.deferred = True
                return
            self.deploying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.deploying
            self.deploying = None
        waited = time.monotonic() - self.latest_at
        if self.latest_job is not None and not self.latest_started and waited < START_WAIT_S:
            self.deferred = True
            if self.retry is None:
                self.retry = asyncio.get_running_loop().call_later(
                    START_WAIT_S - waited, self.queue.put_nowait, (None, _RETRY))
            return
        self.deferred = False
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        reference = await asyncio.to_thread(saved_at, self.project.root, sorted(self.touched),
                                            self.noticed)
        deployment = Deployment(
            self.deploy_request, self.pusher, self.connections, run=self.run + 1,
            reference=reference, since="watch" if first else "save",
            supersedes=self.latest_job, on_submitted=self._submitted,
            on_submitting=self._submitting, touched=frozenset(self.touched),
            skip_unchanged=not first,
        )
        self.submitting = False
        self.deploying = asyncio.create_task(self._one_run(deployment))
        self.runs[self.deploying] = deployment

    def _run_moved(self, event: daemon_pb2.DeployEvent) -> None:
        """The followed run's job started or ended: saves that waited for it may go."""
        job_event = event.job_event
        started = job_event.HasField("status") and job_event.status.state not in _NOT_STARTED
        if (started or event.HasField("finished")) and not self.latest_started:
            self.latest_started = True
            if self.deferred:
                self.queue.put_nowait((None, _RETRY))

    async def events(self) -> AsyncIterator[daemon_pb2.DeployEvent]:
        project, state = self.project, self.state
        await self.start_run(set(), first=True)
        while True:
            source, item = await self.queue.get()
            if item is _CHANGE:
                if not project.root.is_dir():
                    raise NotFound(
                        f"{project.root} was deleted or moved; stopped watching it "
                        "(run `c3ctl watch` again where the project is now)"
                    )
                paths = self.changed | state.pending
                self.changed.clear()
                if state.paused or not paths:
                    state.pending = paths
                    continue
                state.pending = set()
                await self.start_run(paths)
            elif item is _RETRY:
                self.retry = None
                if self.deferred and not state.paused:
                    await self.start_run(set())
            elif item is _DONE:
                if self.deploying is not None and source is self.deploying:
                    self._stop(self.deploying)  # skipped, or failed before its header
                    self.deploying = None
                    if self.deferred:
                        await self.start_run(set())
            elif self.deploying is not None and source is self.deploying:
                assert isinstance(item, daemon_pb2.DeployEvent)
                if item.HasField("header"):  # submitted: this is the current run now
                    self.following, self.deploying = self.deploying, None
                    self.run = item.header.run
                    self.touched.difference_update(self.runs[self.following].touched)
                yield item
            elif source is self.following:
                assert isinstance(item, daemon_pb2.DeployEvent)
                self._run_moved(item)
                yield item

    def close(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
        self._stop(self.deploying)
        self._stop(self.following)


async def watch(
    request: daemon_pb2.WatchRequest,
    pusher: Pusher,
    connections: Connections,
    project: Project,
    state: WatchState,
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    session = _Session(request, pusher, connections, project, state)
    project.listeners.add(session.on_change)
    resume_waiter = asyncio.create_task(_resume_signals(state, session.on_resume))
    try:
        async for event in session.events():
            yield event
    finally:
        project.listeners.discard(session.on_change)
        resume_waiter.cancel()
        session.close()


async def _resume_signals(state: WatchState, on_resume: Callable[[], None]) -> None:
    """Turns a resume (state.wake) into a change signal when changes piled up while paused."""
    while True:
        await state.wake.wait()
        state.wake.clear()
        if not state.paused and state.pending:
            on_resume()
