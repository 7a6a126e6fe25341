"""Deploy: scan → hash (through the stat index) → push what is missing → submit → follow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from c3 import config as project_config
from c3 import workspace
from c3.errors import ConfigError, InvalidArgument, NotFound
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.storage.client import StorageClient
from c3.storage.treepush import FileInfo, TreePush, TreePusher, server_identity
from c3.v1 import common_pb2, coordinator_pb2, daemon_pb2, storage_pb2
from c3d.connections import Connections
from c3d.coordclient import CoordinatorClient
from c3d.history import History
from c3d.projects import Projects
from c3d.runfollow import RunClock, follow_run

T = TypeVar("T")
log = logging.getLogger(__name__)


class Pusher:
    """Pushes a project's workspace from its live index, and local datasets."""

    def __init__(self, projects: Projects, history: History) -> None:
        self.projects = projects
        self.history = history
        self.trees = TreePusher(projects.hashes)
        # Per project root: the workspace its latest run shipped (a run's header names what
        # changed since).
        self.last_runs: dict[Path, WorkspacePush] = {}

    async def push_workspace(
        self, root: Path, storage: StorageClient, server_key: str,
        progress: ProgressFeed | None = None,
    ) -> WorkspacePush:
        """The project's workspace, from its live index (only changed files are hashed)."""
        started = time.monotonic()
        project = await self.projects.get(root)
        snap = await project.index.snapshot()
        pushed = await self.trees.push_tree(root, snap.tree, snap.files, storage, server_key, progress)
        stats = _stats(pushed, snap.stats.files_scanned, snap.stats.files_hashed, started)
        return WorkspacePush(pushed.digest, stats, snap.files)

    async def push_directory(
        self, root: Path, storage: StorageClient, server_key: str,
        progress: ProgressFeed | None = None,
    ) -> tuple[str, daemon_pb2.PushStats]:
        """A directory that is not watched (a dataset): scanned now, hashed through the index."""
        started = time.monotonic()
        files = await asyncio.to_thread(workspace.scan, root)
        pushed, hashed = await self.trees.push_files(root, files, storage, server_key, progress)
        return pushed.digest, _stats(pushed, hashed.files_scanned, hashed.files_hashed, started)


@dataclass(frozen=True)
class WorkspacePush:
    digest: str
    stats: daemon_pb2.PushStats
    files: dict[str, FileInfo]  # what shipped: path -> (digest, size, executable, stat)


def _stats(pushed: TreePush, scanned: int, hashed: int, started: float) -> daemon_pb2.PushStats:
    return daemon_pb2.PushStats(
        files_scanned=scanned, files_hashed=hashed, blobs_new=pushed.blobs_new,
        bytes_sent=pushed.bytes_sent, bytes_total=pushed.bytes_total,
        seconds=time.monotonic() - started,
    )


class ProgressFeed:
    """Progress callbacks turned into at most ~10 events a second for the client."""

    INTERVAL_S = 0.1

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.queue: asyncio.Queue[daemon_pb2.Progress] = asyncio.Queue()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.INTERVAL_S or done >= total:
            self._last = now
            self.queue.put_nowait(daemon_pb2.Progress(phase=self.phase, done=done, total=total))


async def with_progress(
    task: asyncio.Task[T], feed: ProgressFeed
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    """Yield progress events while `task` runs; the caller takes task.result() after."""
    while not task.done():
        getter = asyncio.ensure_future(feed.queue.get())
        done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield daemon_pb2.DeployEvent(progress=getter.result())
        else:
            getter.cancel()


async def _submit_through_cancel(
    client: CoordinatorClient,
    entries: list[coordinator_pb2.SubmitJobRequest],
    on_submitted: Callable[[common_pb2.Job], None] | None,
) -> list[common_pb2.Job]:
    """Submit (one entry: SubmitJob; several: one SubmitJobs call), and let a cancel that
    arrives meanwhile take effect only once the coordinator has answered: every job it
    accepted is always known (`on_submitted`), so the next run of a watch can supersede
    it instead of leaving it running unseen."""

    async def submit() -> list[common_pb2.Job]:
        if len(entries) == 1:
            return [(await client.stub.SubmitJob(entries[0])).job]
        reply = await client.stub.SubmitJobs(coordinator_pb2.SubmitJobsRequest(jobs=entries))
        return list(reply.jobs)

    call = asyncio.ensure_future(submit())
    try:
        jobs = await asyncio.shield(call)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            accepted = await call
            if on_submitted is not None:
                for job in accepted:
                    on_submitted(job)
        raise
    if on_submitted is not None:
        for job in jobs:
            on_submitted(job)
    return jobs


def array_entries(
    spec: common_pb2.JobSpec, size: int
) -> list[coordinator_pb2.SubmitJobRequest]:
    """`size` copies of the spec as one array (array_index 0 .. size-1, array_size size);
    size 0 is a single job outside any array."""
    if size == 0:
        return [coordinator_pb2.SubmitJobRequest(spec=spec)]
    entries = []
    for index in range(size):
        member = common_pb2.JobSpec()
        member.CopyFrom(spec)
        member.array_index, member.array_size = index, size
        entries.append(coordinator_pb2.SubmitJobRequest(spec=member))
    return entries


def _check_array(request: daemon_pb2.DeployRequest) -> None:
    if request.array > MAX_JOBS_PER_SUBMIT:
        raise InvalidArgument(
            f"array {request.array} is too large: an array has at most {MAX_JOBS_PER_SUBMIT} jobs"
        )
    if request.array and request.follow:
        raise InvalidArgument(
            "an array cannot be followed: follow one job with `c3ctl logs -f JOB`, "
            "or all with `c3ctl squeue --follow`"
        )


def dataset_name(directory: Path) -> str:
    """A dataset name from a local directory's name: lowercase, [a-z0-9._-] only."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.name.lower()).strip("-.")
    return name or "data"


async def _latest_if_same(
    storage: StorageClient, path: str, digest: str
) -> storage_pb2.VersionInfo | None:
    """The latest version of `path` when it already holds exactly this tree: an unchanged
    directory does not make a new version."""
    try:
        latest = await storage.resolve(f"{path}@latest")
    except NotFound:
        return None
    return latest if latest.manifest_digest == digest else None


async def resolve_datasets(
    cfg: project_config.ProjectConfig,
    storage: StorageClient,
    pusher: Pusher,
    server_key: str,
) -> AsyncIterator[tuple[common_pb2.DatasetMount, daemon_pb2.PushStats | None]]:
    """Each dataset mount resolved to an exact version; local directories uploaded first."""
    for ds in cfg.datasets:
        stats = None
        if ds.local_dir is not None:
            digest, stats = await pusher.push_directory(ds.local_dir, storage, server_key)
            path = f"/datasets/{dataset_name(ds.local_dir)}"
            version = await _latest_if_same(storage, path, digest)
            if version is None:
                version = await storage.commit(
                    path, digest, message=f"uploaded by deploy of {cfg.project}"
                )
        else:
            version = await storage.resolve(ds.ref)
        yield (
            common_pb2.DatasetMount(
                ref=ds.ref,
                mount=ds.mount,
                resolved_path=version.path,
                version=version.version,
                manifest_digest=version.manifest_digest,
            ),
            stats,
        )


# A run's header names at most this many changed paths (and counts the rest).
MAX_HEADER_PATHS = 20


def changed_paths(
    pushed: WorkspacePush, previous: WorkspacePush, touched: Collection[str] = ()
) -> list[str]:
    """Paths whose content or executable bit differs from the previous run's, and those
    saved since (`touched`) that ship: sorted. Only paths that ship now or shipped then,
    so an editor's temp file that came and went, or an ignored file, is never named."""
    files, before = pushed.files, previous.files
    changed = {p for p in touched if p in files}
    if pushed.digest != previous.digest:
        changed.update(
            p for p, info in files.items()
            if (old := before.get(p)) is None or old[0] != info[0] or old[2] != info[2]
        )
        changed.update(p for p in before if p not in files)
    return sorted(changed)


def run_header(
    run: int, job_id: str, pushed: WorkspacePush, previous: WorkspacePush | None,
    touched: Collection[str] = (),
) -> daemon_pb2.RunHeader:
    header = daemon_pb2.RunHeader(
        run=run, job_id=job_id, files=len(pushed.files), bytes_total=pushed.stats.bytes_total,
        bytes_sent=pushed.stats.bytes_sent, first=previous is None,
    )
    if previous is not None:
        changed = changed_paths(pushed, previous, touched)
        header.changed.extend(changed[:MAX_HEADER_PATHS])
        header.changed_total = len(changed)
    return header


def apply_overrides(spec: common_pb2.JobSpec, request: daemon_pb2.DeployRequest) -> None:
    """What the command line says over the .c3 file: provider, gpu, time, the command."""
    if request.provider:
        spec.provider = request.provider
    if request.gpu:
        spec.gpu = request.gpu
    if request.time_limit_seconds:
        spec.time_limit_seconds = request.time_limit_seconds
    if request.command:
        spec.command.extend(request.command)


@dataclass
class Deployment:
    """One deploy: `submit()` pushes, resolves datasets and submits (yielding its events);
    `follow()` then streams the submitted job as its follower sees it.

    `reference` is when the user acted (the save, or the command) as a wall-clock time:
    the run's timing line counts from it. `touched` are paths the watcher saw saved since
    the previous run; with `skip_unchanged`, a deploy whose workspace is the previous run's
    and none of whose shipped files was saved stops before submitting (`skipped`)."""

    request: daemon_pb2.DeployRequest
    pusher: Pusher
    connections: Connections
    run: int = 0
    reference: float = field(default_factory=time.time)
    since: str = "command"
    supersedes: common_pb2.Job | None = None
    on_submitted: Callable[[common_pb2.Job], None] | None = None
    # Called just before the submit call (watch mode stops showing the run this replaces).
    on_submitting: Callable[[], None] | None = None
    touched: Collection[str] = ()
    skip_unchanged: bool = False
    jobs: list[common_pb2.Job] = field(default_factory=list, init=False)
    skipped: bool = field(default=False, init=False)
    _client: CoordinatorClient | None = field(default=None, init=False)
    _storage: StorageClient | None = field(default=None, init=False)
    _pushed_at: float = field(default=0.0, init=False)

    async def submit(self) -> AsyncIterator[daemon_pb2.DeployEvent]:
        request, pusher, connections = self.request, self.pusher, self.connections
        started = time.perf_counter()
        _check_array(request)  # before anything is pushed
        project_dir = Path(request.project_dir)
        cfg_path = project_config.find_project_file(project_dir)
        cfg = await asyncio.to_thread(project_config.load_project, cfg_path)
        project = await pusher.projects.get(cfg.root)
        if not request.command:
            rule = await asyncio.to_thread(project.index.matcher.explain, cfg.script, False)
            if rule is not None:
                raise ConfigError(
                    f"{cfg.path}: script: {cfg.script} is left out of the workspace by {rule}; "
                    f"remove that rule or add `!{cfg.script}` to .c3ignore"
                )
        target = connections.target(request)
        client = self._client = await connections.coordinator(target)
        storage = self._storage = await connections.storage(target)
        server_key = server_identity(connections.storage_address(target), request.api_key)
        feed = ProgressFeed("upload")
        push = asyncio.create_task(pusher.push_workspace(cfg.root, storage, server_key, feed))
        try:
            async for event in with_progress(push, feed):
                yield event
        finally:
            push.cancel()
        pushed = push.result()
        previous = pusher.last_runs.get(cfg.root)
        if (self.skip_unchanged and previous is not None and pushed.digest == previous.digest
                and not any(p in pushed.files for p in self.touched)):
            self.skipped = True
            return
        # Held back until the job is submitted, so that the run's header (which names the
        # job) comes first.
        later = [daemon_pb2.DeployEvent(pushed=pushed.stats)]
        mounts = []
        dataset_bytes = 0
        async for mount, ds_stats in resolve_datasets(cfg, storage, pusher, server_key):
            mounts.append(mount)
            if ds_stats is not None:
                dataset_bytes += ds_stats.bytes_sent
                later.append(daemon_pb2.DeployEvent(
                    notice=f"dataset {mount.resolved_path} v{mount.version}: "
                    f"{ds_stats.blobs_new} new blobs, {ds_stats.bytes_sent} bytes sent"
                ))
        spec = project_config.job_spec(cfg, workspace_manifest_digest=pushed.digest)
        del spec.datasets[:]
        spec.datasets.extend(mounts)
        apply_overrides(spec, request)
        entries = array_entries(spec, request.array)
        if self.supersedes is not None:  # watch mode: always a single job
            old = await client.stub.GetJob(coordinator_pb2.GetJobRequest(job_id=self.supersedes.id))
            entries[0].supersedes_job_id = self.supersedes.id
            entries[0].prefer_agent_id = old.job.agent_id
        pushed_at = time.perf_counter()
        self._pushed_at = time.time()
        if self.on_submitting is not None:
            self.on_submitting()
        self.jobs = await _submit_through_cancel(client, entries, self.on_submitted)
        log.debug(
            "deploy %s: prepare+push %.1f ms, submit %.1f ms", self.jobs[0].id,
            (pushed_at - started) * 1000, (time.perf_counter() - pushed_at) * 1000,
        )
        pusher.last_runs[cfg.root] = pushed
        if len(self.jobs) == 1:
            # A watch's first run names the whole workspace, not what changed before it.
            since = previous if self.run != 1 else None
            header = run_header(self.run, self.jobs[0].id, pushed, since, self.touched)
            header.bytes_sent += dataset_bytes  # what the run moved, local datasets included
            yield daemon_pb2.DeployEvent(header=header)
        for event in later:
            yield event
        for job in self.jobs:  # in array_index order: SubmitJobs answers in request order
            yield daemon_pb2.DeployEvent(submitted=job)

    def follow(self) -> AsyncIterator[daemon_pb2.DeployEvent]:
        """The submitted job's events until it ends, with timing line and final record."""
        (job,) = self.jobs
        assert self._client is not None and self._storage is not None
        storage = self._storage

        async def storage_client() -> StorageClient:
            return storage

        return follow_run(
            self._client, storage_client, self.pusher.history, job.id,
            timing=RunClock(self.since, self.reference, self._pushed_at),
        )


async def deploy(
    request: daemon_pb2.DeployRequest,
    pusher: Pusher,
    connections: Connections,
) -> AsyncIterator[daemon_pb2.DeployEvent]:
    """One deploy, followed when the request says so (the Deploy call)."""
    reference = request.requested_at.ToNanoseconds() / 1e9 if request.HasField("requested_at") else time.time()
    deployment = Deployment(request, pusher, connections, reference=reference)
    async for event in deployment.submit():
        yield event
    if request.follow:
        async for event in deployment.follow():
            yield event
