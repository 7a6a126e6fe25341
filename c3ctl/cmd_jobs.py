"""Job commands: squeue, logs, cancel, pull."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click
from rich.markup import escape

from c3 import config as project_config
from c3.errors import ConfigError, FailedPrecondition
from c3.storage.client import StorageClient
from c3.v1 import common_pb2, coordinator_pb2, daemon_pb2
from c3ctl import render, session
from c3ctl.aio import run
from c3ctl.cmd_deploy import job_summary, verbosity_options
from c3ctl.daemon_client import DaemonConnection
from c3ctl.runview import RunView, event_json, mode_of

ARTIFACTS_DIR = "c3-artifacts"
# squeue --state choices: the job states as users see them (lowercase, no prefix).
STATES = {render.state_name(v).lower(): int(v) for v in common_pb2.JobState.values() if v}


def _job_json(job: common_pb2.Job) -> dict[str, object]:
    data = job_summary(job)
    data.update(
        project=job.spec.project,
        job_name=job.spec.job_name or None,
        runtime_seconds=round(render.runtime_of(job), 3),
        failure_reason=render.reason_name(job.failure_reason) if job.failure_reason else None,
        exit_code=job.exit_code if job.state == common_pb2.JOB_STATE_FAILED else None,
        message=job.message or None,
        startup={
            "allocation_ms": job.startup.allocation_ms,
            "agent_pickup_ms": job.startup.agent_pickup_ms,
            "workspace_fetch_ms": job.startup.workspace_fetch_ms,
            "environment_ms": job.startup.environment_ms,
            "script_start_ms": job.startup.script_start_ms,
        },
    )
    return data


async def _follow_queue(as_json: bool, limit: int, states: set[int], project: str) -> None:
    """Server-pushed job changes: a live table on a terminal, one line per change otherwise."""
    jobs: dict[str, common_pb2.Job] = {}
    async with session.coordinator() as s:
        call = s.stub.WatchJobs(
            coordinator_pb2.WatchJobsRequest(
                limit=limit, project=project, states=sorted(states)  # type: ignore[arg-type]
            )
        )
        live = None
        if not as_json and sys.stdout.isatty():
            from rich.live import Live

            live = Live(render.jobs_table([]), console=render.out, auto_refresh=False)
            live.start()
        try:
            async for job in call:
                if states and job.state not in states and job.id not in jobs:
                    continue  # a job already shown stays, to show where it went
                previous = jobs.get(job.id)
                jobs[job.id] = job
                if as_json:
                    click.echo(json.dumps(_job_json(job)))
                elif live is not None:
                    newest = sorted(jobs.values(), key=lambda j: j.created_at.ToNanoseconds(), reverse=True)
                    live.update(render.jobs_table(newest[:limit]), refresh=True)
                elif previous is None or previous.state != job.state:
                    render.out.print(
                        f"{job.id}  {job.spec.project}{escape(render.array_label(job.spec))}  "
                        f"{render.state_name(job.state)}  "
                        f"{job.gpu_profile or job.spec.gpu or 'any'}"
                    )
        finally:
            if live is not None:
                live.stop()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON (one object per change with --follow).")
@click.option("-n", "--limit", default=50, show_default=True, help="How many jobs to list.")
@click.option("--follow", is_flag=True, help="Keep the list current as jobs change (server-pushed).")
@click.option("--state", "state_names", multiple=True, type=click.Choice(list(STATES), case_sensitive=False),
              help="Only jobs in this state (repeat for several).")
@click.option("--project", default="", help="Only jobs of this project.")
def squeue(as_json: bool, limit: int, follow: bool, state_names: tuple[str, ...], project: str) -> None:
    """List your jobs with status, GPU profile and runtime."""
    if limit < 0:
        raise click.UsageError(f"--limit {limit}: give 0 (every job) or more")
    states = {STATES[name.lower()] for name in state_names}
    if follow:
        try:
            run(_follow_queue(as_json, limit, states, project))
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        return

    async def go() -> list[common_pb2.Job]:
        async with session.coordinator() as s:
            request = coordinator_pb2.ListJobsRequest(
                limit=limit, states=sorted(states), project=project  # type: ignore[arg-type]
            )
            reply = await s.stub.ListJobs(request)
            return list(reply.jobs)

    jobs = run(go())
    if as_json:
        click.echo(json.dumps({"jobs": [_job_json(j) for j in jobs]}))
    elif not jobs and (states or project):
        render.err.print("no jobs match")
    elif not jobs:
        render.err.print("no jobs yet: run `c3ctl deploy -f` in a project")
    else:
        render.out.print(render.jobs_table(jobs))


@click.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per event (seq, at, kind, stream/state, text...).")
@click.option("-t", "--timestamps", is_flag=True, help="Start each output line with its time (UTC).")
@click.option("--tail", type=click.IntRange(min=0), default=0, metavar="N",
              help="Only the last N output lines (then, with -f, what comes).")
@verbosity_options
def logs(job_id: str, follow: bool, as_json: bool, timestamps: bool, tail: int,
         verbose: bool, quiet: bool) -> None:
    """Print a job's output: a timing line before its first line, and how it ended."""
    mode = mode_of(verbose, quiet)
    if as_json and (verbose or quiet or timestamps):
        raise click.UsageError("--json prints every event as it is; it takes no -v, -q or -t")
    view = RunView(mode, timestamps=timestamps)

    async def go() -> None:
        creds = session.credentials()
        request = daemon_pb2.LogsRequest(
            job_id=job_id, follow=follow, api_key=creds.api_key, tail=tail,
            coordinator_address=creds.coordinator_address, tls=creds.daemon_tls,
        )
        async with DaemonConnection() as daemon:
            await daemon.ensure_running()
            if as_json:
                async for event in daemon.stub.Logs(request):
                    click.echo(event_json(event))
                return
            try:
                async for deploy_event in daemon.stub.Follow(request):
                    view.handle(deploy_event)
            finally:
                view.end()

    try:
        run(go())
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
def cancel(job_ids: tuple[str, ...]) -> None:
    """Cancel one or more jobs."""

    async def go() -> list[common_pb2.Job]:
        async with session.coordinator() as s:
            reply = await s.stub.CancelJob(coordinator_pb2.CancelJobRequest(job_ids=list(job_ids)))
            return list(reply.jobs)

    for job in run(go()):
        render.err.print(f"{job.id}: {render.status_line(job.state)}")


async def pull_job(
    s: session.CoordinatorSession, storage: StorageClient, job: common_pb2.Job, dest_root: Path
) -> Path:
    """Download a job's artifacts into dest_root/<job id>, all or nothing, and mark it SYNCED."""
    if job.state not in (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED):
        raise FailedPrecondition(
            f"{job.id} is {render.state_name(job.state)}; only COMPLETED jobs have artifacts to pull"
        )
    version = await storage.resolve(job.artifacts_path or f"/jobs/{job.id}")
    tree = await storage.get_manifest(version.manifest_digest)
    dest_root.mkdir(parents=True, exist_ok=True)
    final = dest_root / job.id
    staging = Path(tempfile.mkdtemp(prefix=f".{job.id}.", dir=dest_root))
    try:
        await storage.download_tree(tree, staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if job.state == common_pb2.JOB_STATE_COMPLETED:
        await s.stub.MarkSynced(coordinator_pb2.MarkSyncedRequest(job_id=job.id))
    return final


@click.command()
@click.argument("job_id", required=False)
def pull(job_id: str | None) -> None:
    """Download artifacts of JOB_ID (or of every completed, unsynced job of this project)."""
    try:
        project_root: Path | None = project_config.find_project_file(Path.cwd()).parent
    except ConfigError:
        if not job_id:
            raise
        project_root = None
    dest_root = (project_root or Path.cwd()) / ARTIFACTS_DIR

    async def go() -> list[tuple[common_pb2.Job, Path]]:
        async with session.coordinator(project_root) as s:
            if job_id:
                jobs = [(await s.stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id))).job]
            else:
                cfg = project_config.load_project(project_config.find_project_file(Path.cwd()))
                listed = await s.stub.ListJobs(coordinator_pb2.ListJobsRequest(
                    states=[common_pb2.JOB_STATE_COMPLETED], project=cfg.project))
                jobs = list(listed.jobs)
            if not jobs:
                return []
            token = await s.storage_token()
            tls = s.creds.channel_credentials
            async with StorageClient(token.storage_address, token.token, credentials=tls) as storage:
                return [(job, await pull_job(s, storage, job, dest_root)) for job in jobs]

    pulled = run(go())
    if not pulled:
        render.err.print("nothing to pull: no completed, unsynced jobs for this project")
    for job, path in pulled:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        render.err.print(f"{job.id}: {len(files)} files → {shown}/")
        for f in files:
            sys.stdout.write(f"{f.relative_to(path)}\n")
