"""`c3ctl deploy`: push the workspace through c3d, submit, and optionally follow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.markup import escape

from c3 import config as project_config
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.v1 import common_pb2, daemon_pb2
from c3ctl import render, session
from c3ctl.aio import run
from c3ctl.daemon_client import DaemonConnection


def job_summary(job: common_pb2.Job) -> dict[str, object]:
    """The fields the C3 docs list for `deploy --json`."""
    summary: dict[str, object] = {
        "id": job.id,
        "status": render.state_name(job.state),
        "provider": job.provider or job.spec.provider or None,
        "region": job.region or None,
        "gpu_profile": job.gpu_profile or None,
        "route": {"pool": job.pool or None, "warm_pool_hit": bool(job.startup.warm_pool_hit)},
        "dashboard_url": None,
        "pull_command": f"c3ctl pull {job.id}",
    }
    if job.spec.array_size:  # only members of a `deploy --array`
        summary.update(array_index=job.spec.array_index, array_size=job.spec.array_size)
    return summary


SUCCESS = (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED)


def _check_array(array: int, follow: bool, watch_mode: bool) -> None:
    if not 1 <= array <= MAX_JOBS_PER_SUBMIT:
        raise click.UsageError(f"--array {array}: give the number of jobs, 1 to {MAX_JOBS_PER_SUBMIT}")
    if follow:
        raise click.UsageError(
            "--array cannot be combined with -f: follow one job with `c3ctl logs -f JOB`, "
            "or all with `c3ctl squeue --follow`"
        )
    if watch_mode:
        raise click.UsageError("--array cannot be combined with --watch: watch mode runs one job per save")


def show_event(
    event: daemon_pb2.DeployEvent, *, follow: bool, as_json: bool
) -> common_pb2.Job | None:
    """Print one deploy event; returns the job when the event says it finished."""
    kind = event.WhichOneof("kind")
    if kind == "progress":
        render.progress(event.progress)
    elif kind == "pushed":
        render.progress_done()
        if not as_json:
            render.err.print(f"[dim]{render.push_stats(event.pushed)}[/]")
    elif kind == "notice":
        render.err.print(f"[dim]{escape(event.notice)}[/]")
    elif kind == "submitted":
        job = event.submitted
        if as_json:
            click.echo(json.dumps(job_summary(job)))
        else:
            member = f" {escape(render.array_label(job.spec))}" if job.spec.array_size else ""
            render.err.print(
                f"submitted [bold]{job.id}[/]{member} ({job.spec.project}, gpu {job.spec.gpu or 'any'})"
            )
            if not follow:
                click.echo(job.id)
    elif kind == "job_event":
        render.job_event(event.job_event)
    elif kind == "finished":
        if event.finished.state in SUCCESS:
            render.err.print(f"[dim]artifacts: c3ctl pull {event.finished.id}[/]")
        return event.finished
    return None


class _Detach:
    """The jobs submitted so far, for the message on Ctrl-C."""

    def __init__(self) -> None:
        self.job_ids: list[str] = []

    def message(self) -> str:
        if not self.job_ids:
            return "interrupted before the job was submitted; nothing is running"
        if len(self.job_ids) == 1:
            job_id = self.job_ids[0]
            return f"detached; {job_id} keeps running. Follow it with `c3ctl logs -f {job_id}`"
        return (
            f"detached; {len(self.job_ids)} jobs keep running ({' '.join(self.job_ids)}). "
            "Follow one with `c3ctl logs -f JOB`, or all with `c3ctl squeue --follow`"
        )


async def _deploy(
    project_dir: Path, follow: bool, provider: str, as_json: bool, array: int, detach: _Detach
) -> int:
    creds = session.credentials(project_dir)
    request = daemon_pb2.DeployRequest(
        project_dir=str(project_dir),
        follow=follow,
        provider=provider,
        api_key=creds.api_key,
        coordinator_address=creds.coordinator_address,
        tls=creds.daemon_tls,
        array=array,
    )
    exit_code = 0
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        async for event in daemon.stub.Deploy(request):
            if event.HasField("submitted"):
                detach.job_ids.append(event.submitted.id)
            finished = show_event(event, follow=follow, as_json=as_json)
            if finished is not None and finished.state not in SUCCESS:
                exit_code = 1
    return exit_code


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Stream the job's status and output until it ends.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object describing the job (one line per job with --array).")
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
@click.option("--watch", "watch_mode", is_flag=True, help="Redeploy on every save (as `c3ctl watch`).")
@click.option("--array", "array", type=int, default=None, metavar="N",
              help=f"Push once and submit N jobs of this spec (1..{MAX_JOBS_PER_SUBMIT}), a sweep: each job "
              "gets C3_ARRAY_INDEX (0..N-1) and C3_ARRAY_SIZE (N); their ids print one per line.")
def deploy(follow: bool, as_json: bool, provider: str, watch_mode: bool, array: int | None) -> None:
    """Push the project (nearest .c3 upward) and run it."""
    if array is not None:
        _check_array(array, follow, watch_mode)
    if watch_mode:
        if as_json:
            raise click.UsageError("--watch streams every run; it cannot be combined with --json")
        from c3ctl.cmd_watch import watch_project

        watch_project(provider)
        return
    if as_json and follow:
        raise click.UsageError("--json cannot be combined with -f: use `c3ctl logs -f JOB` to follow")
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)  # fail fast, with file:line, before any daemon work
    detach = _Detach()
    try:
        code = run(_deploy(cfg_path.parent.resolve(), follow, provider, as_json, array or 0, detach))
    except KeyboardInterrupt:
        render.err.print(f"\n{detach.message()}")
        raise SystemExit(130) from None
    raise SystemExit(code)
