"""Turns an Assignment into a finished job: workspace, datasets, environment, run,
artifacts, final status, clean-up. One job at a time (the agent owns its GPUs whole).

The agent, not the job, decides when a job is over: a cancel reaches whatever phase the
job is in (fetch, environment build, run, artifact upload) at once, and the job's time
limit counts its whole time on the agent, from pickup. Whatever ended a job, its cgroup
and its network namespace go with it, and any group an earlier job of this agent left
(a killed agent, a stuck process) is removed then too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from agent import artifacts
from agent.artifacts import ArtifactLimits
from agent.cgroups import CgroupManager, JobCgroup
from agent.discovery import HostInfo
from agent.diskwatch import DEFAULT_INTERVAL_SECONDS, watch_disk, watch_pids
from agent.envs import EnvCache, EnvError
from agent.jobnet import JobNetwork, JobNetworks, Netns, NetnsPool
from agent.logbatch import LogBatcher
from agent.logjournal import LogJournal
from agent.outcome import final_status, stop_ending
from agent.resources import ResourceShare
from agent.runner import DEFAULT_GRACE_SECONDS, Ending, RunResult, ScriptRun
from agent.sandbox import JobLayout, LaunchSpec, ReadOnlyMount, SandboxPolicy
from agent.stage import hand_over, work_dir
from agent.storagepool import StoragePool
from agent.warmtree import WarmTrees
from agent.workspace import DatasetCache, FetchStats, Foreground, cache_fetched, fetch_workspace
from c3.dockerref import validate_image
from c3.errors import C3Error
from c3.storage.blobcache import BlobCache
from c3.storage.client import StorageClient
from c3.v1 import agent_pb2, common_pb2

log = logging.getLogger(__name__)

Emit = Callable[[agent_pb2.AgentMessage], None]
StorageFactory = Callable[[str, str], Any]  # (address, token) -> StorageClient-like client
DEFAULT_BLOB_CACHE_BYTES = 20 << 30

S = common_pb2


class JobFailed(Exception):
    def __init__(self, reason: common_pb2.FailureReason.ValueType, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Active:
    job: common_pb2.Job
    task: asyncio.Task[None] | None = None
    run: ScriptRun | None = None
    run_over: bool = False  # the script has ended (artifacts are being collected)
    stop_state: common_pb2.JobState.ValueType = S.JOB_STATE_UNSPECIFIED
    stop_reason: str = ""
    received_ns: int = 0
    caching: asyncio.Task[None] | None = None  # fills the blob cache while the script runs
    fetched: FetchStats = field(default_factory=lambda: FetchStats(0, 0))
    tree: Path | None = None  # where the job's workspace files are now


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


T = TypeVar("T")


async def _settled(task: asyncio.Task[T | None]) -> T | None:
    """The task's result once it has finished; None if it failed (its error, if it
    matters, was raised where the job awaited it)."""
    await asyncio.wait({task})
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _remove_job_dir(job_dir: Path) -> None:
    shutil.rmtree(job_dir, True)
    shutil.rmtree(work_dir(job_dir), True)


class JobExecutor:
    def __init__(self, *, data_dir: Path, host: HostInfo, sandbox: SandboxPolicy | None,
                 unsandboxed_ok: bool, emit: Emit, on_idle: Callable[[], None] = lambda: None,
                 storage_factory: StorageFactory | None = None,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS,
                 blob_cache_bytes: int = DEFAULT_BLOB_CACHE_BYTES,
                 sandbox_problem: str = "", cgroups: CgroupManager | None = None,
                 share: ResourceShare | None = None, docker: bool = False,
                 disk_interval: float = DEFAULT_INTERVAL_SECONDS,
                 netpool: NetnsPool | None = None, network_problem: str = "",
                 artifact_limits: ArtifactLimits = ArtifactLimits()) -> None:
        self.data_dir = data_dir
        self.cgroups = cgroups
        self.share = share
        self.docker = docker
        self.disk_interval = disk_interval
        self.host = host
        self.sandbox = sandbox
        self.sandboxed = sandbox is not None
        self.unsandboxed_ok = unsandboxed_ok
        self.sandbox_problem = sandbox_problem
        self.networks = JobNetworks(netpool) if netpool is not None and sandbox is not None \
            and sandbox.network is JobNetwork.EGRESS else None
        self.network_problem = network_problem
        self.artifact_limits = artifact_limits
        self._emit = emit
        self._on_idle = on_idle
        self._storage = StoragePool(storage_factory or (lambda addr, tok: StorageClient(addr, tok)))
        self.grace_seconds = grace_seconds
        self.jobs_dir = data_dir / "jobs"
        self.blobs = BlobCache(data_dir / "blobs", blob_cache_bytes)
        self.datasets = DatasetCache(data_dir / "datasets", self.blobs)
        self.envs = EnvCache(data_dir / "envs")
        self._active: dict[str, _Active] = {}
        self._projects: set[str] = set()
        self.warm = WarmTrees(data_dir / "warm")
        self.foreground = Foreground()  # job startups; background caching yields to them
        self._background: set[asyncio.Task[Any]] = set()
        # Lines sent that the coordinator may not have committed (resent on ResumeLogs).
        self.journal = LogJournal()
        # Leftovers of a previous run of this agent (crash, SIGKILL): never reused. Its
        # job cgroups go first (they may still hold processes writing into the job dirs).
        if self.cgroups is not None:
            removed = self.cgroups.sweep()
            if removed:
                log.info("removed %d job cgroup(s) a previous run left: %s", len(removed),
                         ", ".join(removed))
        if self.jobs_dir.exists():
            shutil.rmtree(self.jobs_dir, ignore_errors=True)

    # -- what the connection reports -------------------------------------------------
    def running_job_ids(self) -> list[str]:
        return sorted(self._active)

    def cached_projects(self) -> list[str]:
        return sorted(self._projects)

    def cached_env_hashes(self) -> list[str]:
        return self.envs.cached_hashes()

    # -- commands from the coordinator -------------------------------------------------
    def assign(self, assignment: agent_pb2.Assignment) -> None:
        job = assignment.job
        if job.id in self._active:
            return  # re-sent after a reconnect: already running it
        if self._active:
            busy = next(iter(self._active))
            self._status(job.id, S.JOB_STATE_FAILED, reason=S.FAILURE_REASON_INTERNAL,
                         message=f"agent is busy with job {busy}; it runs one job at a time")
            return
        self._status(job.id, S.JOB_STATE_SCHEDULING)  # pickup acknowledgement
        active = _Active(job, received_ns=time.time_ns())
        self._active[job.id] = active
        active.task = asyncio.create_task(self._run(active, assignment), name=f"job-{job.id}")

    def cancel(self, job_id: str, state: common_pb2.JobState.ValueType, reason: str) -> None:
        active = self._active.get(job_id)
        if active is None or active.stop_state:
            return
        active.stop_state = state if state in (S.JOB_STATE_TIMED_OUT,) else S.JOB_STATE_CANCELED
        active.stop_reason = reason or "canceled"
        if active.run is not None and not active.run_over:
            active.run.stop(stop_ending(active.stop_state), active.stop_reason)
        elif active.task is not None:
            # Fetch, environment build or artifact upload: each stops where it is.
            active.task.cancel()

    async def wait_idle(self) -> None:
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop whatever runs (the agent is going away) and wait for the reports."""
        for job_id in list(self._active):
            self.cancel(job_id, S.JOB_STATE_CANCELED, "the agent is shutting down")
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._storage.close()
        if self.networks is not None:
            await self.networks.close()

    # -- one job -----------------------------------------------------------------------
    def _status(self, job_id: str, state: common_pb2.JobState.ValueType, *,
                reason: common_pb2.FailureReason.ValueType = S.FAILURE_REASON_UNSPECIFIED,
                exit_code: int = 0, message: str = "",
                startup: common_pb2.StartupBreakdown | None = None,
                artifacts_path: str = "", artifacts_version: int = 0) -> agent_pb2.JobStatusUpdate:
        at = Timestamp()
        at.GetCurrentTime()
        update = agent_pb2.JobStatusUpdate(
            job_id=job_id, state=state, failure_reason=reason, exit_code=exit_code,
            message=message, artifacts_path=artifacts_path, artifacts_version=artifacts_version,
            at=at,
        )
        if startup is not None:
            update.startup.CopyFrom(startup)
        self._emit(agent_pb2.AgentMessage(status=update))
        return update

    async def _send_logs(self, batch: agent_pb2.LogBatch) -> None:
        self.journal.record(batch)
        self._emit(agent_pb2.AgentMessage(logs=batch))

    async def _run(self, active: _Active, assignment: agent_pb2.Assignment) -> None:
        job = active.job
        received = time.monotonic()
        logs = LogBatcher(job.id, self._send_logs)
        logs.start()
        # Stamped with the moment the assignment arrived: the user sees pickup latency,
        # and `scripts/bench/agent` measures "received -> first output line" from it.
        logs.system(f"c3: picked up by {self.host.hostname} ({job.gpu_profile})",
                    at_ns=active.received_ns)
        job_dir = self.jobs_dir / job.id
        final: tuple[Any, ...] = (S.JOB_STATE_FAILED, S.FAILURE_REASON_INTERNAL, 0, "", "", 0)
        limit = job.spec.time_limit_seconds
        deadline = asyncio.get_running_loop().call_later(
            limit, self.cancel, job.id, S.JOB_STATE_TIMED_OUT,
            f"time limit of {limit:g}s reached") if limit else None
        try:
            final = await self._execute(active, assignment, logs, job_dir, received)
        except asyncio.CancelledError:
            state = active.stop_state or S.JOB_STATE_CANCELED
            reason = active.stop_reason or "canceled"
            logs.system(f"c3: stopped: {reason}")
            final = (state, S.FAILURE_REASON_UNSPECIFIED, 0, reason, "", 0)
        except JobFailed as exc:
            logs.system(f"c3: {exc.message}")
            final = (S.JOB_STATE_FAILED, exc.reason, 0, exc.message, "", 0)
        except Exception as exc:  # a bug in the agent must fail the job, not the agent
            log.exception("job %s: internal error", job.id)
            final = (S.JOB_STATE_FAILED, S.FAILURE_REASON_INTERNAL, 0, f"agent error: {exc}", "", 0)
        finally:
            if deadline is not None:
                deadline.cancel()
            await logs.close()
            self.journal.finished(job.id)
            state, reason, code, message, path, version = final
            # Kept for the project's next job, before that job can be sent (a rename);
            # tidied once the status is out (the next job tidies it if it comes first).
            if active.fetched.records:
                active.tree = await asyncio.to_thread(
                    self.warm.keep, job.org_id, job.spec.project, job_dir / "workspace",
                    active.fetched.records)
            # Free before reporting: the coordinator may send the next job the moment it
            # sees the final status. The old job's dir is removed while that one starts.
            self._active.pop(job.id, None)
            report = self._status(job.id, state, reason=reason, exit_code=code, message=message,
                                  artifacts_path=path, artifacts_version=version)
            # Kept too: the coordinator may die before committing it (resent on ResumeLogs).
            self.journal.final_status(report)
            self._on_idle()
            if active.caching is not None and not active.caching.done():
                # Goes on reading the kept tree; held so it is not garbage-collected.
                self._hold(active.caching)
            if active.tree is not None:
                self._hold(asyncio.create_task(asyncio.to_thread(
                    self.warm.tidy, job.org_id, job.spec.project)))
            await asyncio.to_thread(_remove_job_dir, job_dir)

    def _hold(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _execute(self, active: _Active, assignment: agent_pb2.Assignment,
                       logs: LogBatcher, job_dir: Path, received: float) -> tuple[Any, ...]:
        job, spec = active.job, active.job.spec
        image = ""
        if spec.docker_image:
            try:
                image = validate_image(spec.docker_image)
            except C3Error as exc:
                raise JobFailed(S.FAILURE_REASON_ENV_ERROR, exc.message) from exc
            if not self.docker:
                raise JobFailed(S.FAILURE_REASON_ENV_ERROR,
                                "this agent has no container engine (`docker info` failed at "
                                "its start), so it cannot run docker.image jobs")
        elif not self.sandboxed and not self.unsandboxed_ok:
            raise JobFailed(S.FAILURE_REASON_ENV_ERROR,
                            f"this agent cannot sandbox jobs ({self.sandbox_problem}); "
                            "its operator must fix bubblewrap or start it with --allow-unsandboxed")
        layout = JobLayout.under(job_dir)
        # The job's cgroup and its other dirs are made while the workspace is fetched,
        # and its network namespace (made ahead, after the previous job) is taken.
        prepared = asyncio.create_task(self._prepare(job.id, layout, with_cgroup=not image))
        network = asyncio.create_task(self._network(image, job.org_id))
        try:
            return await self._start_and_wait(active, assignment, logs, layout, received,
                                              image, prepared, network)
        finally:
            await self._drop(await _settled(prepared), await _settled(network), job.org_id)

    async def _start_and_wait(self, active: _Active, assignment: agent_pb2.Assignment,
                              logs: LogBatcher, layout: JobLayout, received: float,
                              image: str, prepared: asyncio.Task[JobCgroup | None],
                              network: asyncio.Task[Netns | None]) -> tuple[Any, ...]:
        job, spec = active.job, active.job.spec
        startup = common_pb2.StartupBreakdown()
        if assignment.HasField("assigned_at") and assignment.assigned_at.seconds:
            startup.agent_pickup_ms = max(
                0.0, (time.time_ns() - assignment.assigned_at.ToNanoseconds()) / 1e6)
        async with self._storage.client(assignment.storage_address,
                                        assignment.storage_token) as client:
            with self.foreground.busy():
                mounts = await self._fetch(active, client, layout, logs)
            startup.workspace_fetch_ms = _ms(time.monotonic() - received)
            self._projects.add(spec.project)
            t_env = time.monotonic()
            venv: Path | None = None
            read_only: tuple[Path, ...] = ()
            if spec.python_project:
                try:
                    env = await self.envs.ensure(layout.workspace, spec.python_project,
                                                 spec.workdir, logs.system)
                except EnvError as exc:
                    raise JobFailed(S.FAILURE_REASON_ENV_ERROR, exc.message) from exc
                venv, read_only = env.venv, env.read_only
            startup.environment_ms = _ms(time.monotonic() - t_env)
            share = self.share
            group = await prepared
            netns = await network
            if self.network_problem and not image:
                logs.system(f"c3: this job has no network: {self.network_problem}")
            ids = self.sandbox.host_ids if self.sandbox is not None else None
            if image and ids is not None:
                await asyncio.to_thread(hand_over, layout.root, *ids)
            launch = LaunchSpec(layout=layout, script=spec.script, workdir=spec.workdir,
                                datasets=mounts, venv=venv, extra_read_only=read_only,
                                cuda_visible_devices=self.host.cuda_visible_devices,
                                shm_bytes=share.shm_bytes if share else 0,
                                docker_image=image, container_name=f"c3-{job.id}",
                                docker_user=f"{ids[0]}:{ids[1]}" if ids else "1000:1000",
                                docker_egress=self.networks is not None,
                                share=share, array_index=spec.array_index,
                                array_size=spec.array_size, command=tuple(spec.command),
                                netns=netns.name if netns is not None else "",
                                cgroup_view=group.view() if group is not None else ())
            # The time limit is the deadline set at pickup (_run), not the runner's own.
            run = ScriptRun(launch, sandbox=None if image else self.sandbox, logs=logs,
                            grace_seconds=self.grace_seconds, cgroup=group)
            t_spawn = time.monotonic()
            try:
                await run.start()
            except C3Error as exc:
                raise JobFailed(S.FAILURE_REASON_WORKSPACE_ERROR, exc.message) from exc
            except OSError as exc:  # the host could not spawn it: name what and why
                log.warning("job %s: could not start the script", job.id, exc_info=True)
                raise JobFailed(
                    S.FAILURE_REASON_INTERNAL,
                    f"the agent could not start the script: {exc.strerror or exc}"
                    + (f": {exc.filename}" if exc.filename else "")
                    + f" (on {self.host.hostname}; the agent's log has the details)",
                ) from exc
            startup.script_start_ms = _ms(time.monotonic() - t_spawn)
            active.run = run
            if active.fetched.fetched:
                active.caching = asyncio.create_task(
                    cache_fetched(active.fetched, lambda: active.tree, self.blobs,
                                  self.foreground))
            self._status(job.id, S.JOB_STATE_RUNNING, startup=startup,
                         message=f"running on {self.host.hostname} ({job.gpu_profile})")
            if active.stop_state:  # a cancel raced the spawn
                run.stop(stop_ending(active.stop_state), active.stop_reason)
            watchdogs = []
            if share is not None and share.disk_bytes:
                watchdogs.append(asyncio.create_task(watch_disk(
                    layout.root, share.disk_bytes, lambda why: run.stop(Ending.DISK_LIMIT, why),
                    self.disk_interval)))
            if group is not None and share is not None and share.pids_max:
                watchdogs.append(asyncio.create_task(watch_pids(
                    group.pids_limited, share.pids_max,
                    lambda why: run.stop(Ending.PIDS_LIMIT, why), self.disk_interval)))
            try:
                result = await run.wait()
            finally:
                for watchdog in watchdogs:
                    watchdog.cancel()
                active.run_over = True
            if active.stop_state and result.ending is Ending.EXITED:
                raise asyncio.CancelledError  # a cancel that came as the script ended
            return await self._finish(client, active, layout, logs, result)

    async def _prepare(self, job_id: str, layout: JobLayout, with_cgroup: bool
                       ) -> JobCgroup | None:
        """The job's artifacts and tmp dirs, and its cgroup (one thread hop)."""
        cgroups, share = self.cgroups, self.share

        def blocking() -> JobCgroup | None:
            for path in (layout.artifacts, layout.tmp):
                path.mkdir(parents=True, exist_ok=True)
            if not with_cgroup or cgroups is None or share is None:
                return None
            try:
                return cgroups.create(cgroups.job_group_name(job_id), share)
            except OSError as exc:
                raise JobFailed(S.FAILURE_REASON_INTERNAL,
                                f"could not create the job's cgroup: {exc}") from exc

        return await asyncio.to_thread(blocking)

    async def _network(self, image: str, org_id: str) -> Netns | None:
        """The job's network namespace (egress; see JobNetworks)."""
        if self.networks is None or image:
            return None
        try:
            return await self.networks.take(org_id)
        except OSError as exc:
            raise JobFailed(S.FAILURE_REASON_INTERNAL,
                            f"could not make the job's network namespace: {exc}") from exc

    async def _drop(self, group: JobCgroup | None, netns: Netns | None, org_id: str) -> None:
        """After any job: its cgroup goes, and so does any cgroup an earlier job of this
        agent left; its namespace is kept for the same org's next job and a fresh one is
        made ahead for any other."""
        cgroups = self.cgroups
        keep = frozenset(cgroups.job_group_name(j) for j in self._active) if cgroups else None

        def blocking() -> None:
            if group is not None:
                group.remove()
            if cgroups is not None and keep is not None:
                for name in cgroups.sweep(keep, attempts=1):
                    log.info("removed the stale job cgroup %s", name)

        await asyncio.to_thread(blocking)
        if self.networks is not None:
            self.networks.done(org_id, netns)

    async def _fetch(self, active: _Active, client: Any, layout: JobLayout,
                     logs: LogBatcher) -> tuple[ReadOnlyMount, ...]:
        spec = active.job.spec
        try:
            stats = await fetch_workspace(client, spec.workspace_manifest_digest,
                                          layout.workspace, self.blobs, self.warm,
                                          (active.job.org_id, spec.project))
        except (C3Error, OSError) as exc:
            raise JobFailed(S.FAILURE_REASON_WORKSPACE_ERROR,
                            f"could not fetch the workspace: {exc}") from exc
        active.fetched = stats
        active.tree = layout.workspace
        logs.system(f"c3: workspace ready ({stats.files} files, "
                    f"{stats.bytes_fetched} bytes fetched)")
        if spec.datasets and not self.sandboxed:
            raise JobFailed(S.FAILURE_REASON_WORKSPACE_ERROR,
                            "datasets are mounted inside the sandbox, which this agent lacks")
        mounts = []
        for dataset in spec.datasets:
            try:
                mounts.append(await self.datasets.materialise(client, dataset))
            except (C3Error, OSError) as exc:
                raise JobFailed(S.FAILURE_REASON_WORKSPACE_ERROR,
                                f"dataset {dataset.ref} at {dataset.mount}: {exc}") from exc
        return tuple(mounts)

    async def _finish(self, client: Any, active: _Active, layout: JobLayout, logs: LogBatcher,
                      result: RunResult) -> tuple[Any, ...]:
        job = active.job
        script_ok = result.ending is Ending.EXITED and result.exit_code == 0
        limit = self.share.memory_bytes if self.share else 0
        pids = self.share.pids_max if self.share else 0
        if result.oom_killed and not script_ok:
            logs.system(f"c3: the job ran out of memory (limit {limit >> 20} MiB) and was "
                        "killed by the kernel's OOM killer")
        committed = await artifacts.collect_and_commit(
            client, job.id, job.spec.project, layout.artifacts, layout.workspace,
            list(job.spec.output), self.artifact_limits, logs.system, script_ok)
        if committed.failure:
            return (S.JOB_STATE_FAILED, S.FAILURE_REASON_UPLOAD_ERROR, 0, committed.failure,
                    "", 0)
        path, version = committed.path, committed.version
        return final_status(result, limit, path, version, pids)
