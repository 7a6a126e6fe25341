"""The Daemon gRPC service: thin handlers over the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import c3
from c3 import workspace
from c3.errors import InvalidArgument, Unavailable, Unimplemented
from c3.grpctypes import Context
from c3.storage.client import StorageClient
from c3.v1 import common_pb2, coordinator_pb2, daemon_pb2, daemon_pb2_grpc
from c3d.connections import Connections
from c3d.coordclient import CoordinatorClient
from c3d.pipeline import Pusher, deploy
from c3d.runfollow import follow_run, tail_events
from c3d.watchmode import WatchState, watch


class DaemonService(daemon_pb2_grpc.DaemonServicer):
    def __init__(self, pusher: Pusher, connections: Connections, shutdown: asyncio.Event) -> None:
        self.pusher = pusher
        self.connections = connections
        self.projects = pusher.projects
        self.watching: dict[Path, WatchState] = {}
        self.shutdown = shutdown
        self.started = time.monotonic()
        self.deploy_lock = asyncio.Lock()

    async def Deploy(
        self, request: daemon_pb2.DeployRequest, context: Context
    ) -> AsyncIterator[daemon_pb2.DeployEvent]:
        if not os.path.isabs(request.project_dir):
            raise InvalidArgument(f"project_dir must be absolute, got {request.project_dir!r}")
        async for event in deploy(request, self.pusher, self.connections):
            yield event

    async def Logs(
        self, request: daemon_pb2.LogsRequest, context: Context
    ) -> AsyncIterator[common_pb2.JobEvent]:
        client = await self._check_access(request)
        async for event in tail_events(
            client, self.pusher.history, request.job_id, live=request.follow, tail=request.tail
        ):
            yield event

    async def Follow(
        self, request: daemon_pb2.LogsRequest, context: Context
    ) -> AsyncIterator[daemon_pb2.DeployEvent]:
        client = await self._check_access(request)
        target = self.connections.target(request)

        async def storage() -> StorageClient:
            return await self.connections.storage(target)

        async for event in follow_run(
            client, storage, self.pusher.history, request.job_id, live=request.follow,
            tail=request.tail,
        ):
            yield event

    async def _check_access(self, request: daemon_pb2.LogsRequest) -> CoordinatorClient:
        """The coordinator client for a logs request, once the caller may see the job."""
        client = await self.connections.coordinator(self.connections.target(request))
        # The local history is shared by every key used on this machine: the caller's
        # key must see the job before any stored event is served (another org's job
        # answers NotFound). Offline, the local history still answers.
        with contextlib.suppress(Unavailable):
            await client.stub.GetJob(coordinator_pb2.GetJobRequest(job_id=request.job_id))
        return client

    async def ListFiles(
        self, request: daemon_pb2.ListFilesRequest, context: Context
    ) -> daemon_pb2.ListFilesResponse:
        root = Path(request.project_dir)
        if request.ignored:
            _, ignored = await asyncio.to_thread(workspace.scan_with_ignored, root)
            return daemon_pb2.ListFilesResponse(
                files=[daemon_pb2.ListedFile(path=i.path, rule=i.rule) for i in ignored]
            )
        # Through the live index: what a deploy would ship, and the index is warm afterwards.
        project = await self.projects.get(root)
        tree, _ = await project.index.manifest()
        listed = [daemon_pb2.ListedFile(path=e.path, size=e.size) for e in tree.entries]
        return daemon_pb2.ListFilesResponse(files=listed, total_size=sum(f.size for f in listed))

    async def Status(
        self, request: daemon_pb2.DaemonStatusRequest, context: Context
    ) -> daemon_pb2.DaemonStatusResponse:
        return daemon_pb2.DaemonStatusResponse(
            version=c3.__version__,
            pid=os.getpid(),
            uptime_seconds=time.monotonic() - self.started,
            watched_projects=[str(p) for p in self.watching],
            indexed_projects=[str(p) for p in self.projects.known()],
            warnings=self.projects.warnings,
        )

    async def Shutdown(
        self, request: daemon_pb2.ShutdownRequest, context: Context
    ) -> daemon_pb2.ShutdownResponse:
        self.shutdown.set()
        return daemon_pb2.ShutdownResponse()

    async def Watch(
        self, request: daemon_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[daemon_pb2.DeployEvent]:
        root = Path(request.project_dir)
        if not root.is_absolute():
            raise InvalidArgument(f"project_dir must be absolute, got {request.project_dir!r}")
        project = await self.projects.get(root)
        state = self.watching.setdefault(project.root, WatchState())
        state.sessions += 1
        try:
            async for event in watch(request, self.pusher, self.connections, project, state):
                yield event
        finally:
            state.sessions -= 1
            if state.sessions == 0:
                del self.watching[project.root]
            if not project.root.is_dir():
                self.projects.forget(project.root)

    async def SetWatchPaused(
        self, request: daemon_pb2.SetWatchPausedRequest, context: Context
    ) -> daemon_pb2.SetWatchPausedResponse:
        state = self.watching.get(Path(request.project_dir).resolve())
        if state is None:
            return daemon_pb2.SetWatchPausedResponse(watching=False)
        state.paused = request.paused
        state.wake.set()
        return daemon_pb2.SetWatchPausedResponse(watching=True)

    async def Unwatch(
        self, request: daemon_pb2.UnwatchRequest, context: Context
    ) -> daemon_pb2.UnwatchResponse:
        self.projects.forget(Path(request.project_dir))
        return daemon_pb2.UnwatchResponse()

    async def Pull(self, request, context):  # type: ignore[no-untyped-def]
        raise Unimplemented("pull runs in c3ctl in this version")
        yield  # pragma: no cover
