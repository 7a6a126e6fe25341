"""`c3ctl deploy`: push the workspace through c3d, submit, and optionally follow."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import click
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

import c3ctl
from c3 import config as project_config
from c3.errors import from_rpc_error
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.v1 import common_pb2, daemon_pb2
from c3ctl import exitcodes, render, session
from c3ctl.aio import run
from c3ctl.daemon_client import DaemonConnection
from c3ctl.runview import Mode, RunView, mode_of


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


def verbosity_options(command: Callable[..., None]) -> Callable[..., None]:
    """-v/--verbose and -q/--quiet, for every command that follows a run."""
    command = click.option("-q", "--quiet", is_flag=True,
                           help="Print only the job's own output.")(command)
    return click.option("-v", "--verbose", is_flag=True,
                        help="Also print every state change and c3 message.")(command)


def requested_now() -> Timestamp:
    """When the user ran this command (c3ctl's own start included): timing lines count
    from here."""
    ts = Timestamp()
    ts.FromNanoseconds(int(c3ctl.STARTED_AT * 1e9))
    return ts


async def follow_deploy(request: daemon_pb2.DeployRequest, view: RunView, detach: _Detach) -> int:
    """Run one Deploy call through the daemon; the exit status tells how its job ended
    (0 for a deploy that is not followed)."""
    exit_code = 0
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        try:
            async for event in daemon.stub.Deploy(request):
                if event.HasField("submitted"):
                    detach.job_ids.append(event.submitted.id)
                finished = view.handle(event)
                if finished is not None:
                    exit_code = exitcodes.for_job(finished)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            view.end()
    return exit_code


def deploy_request(project_dir: Path, *, follow: bool, provider: str, array: int = 0,
                   command: Sequence[str] = (), gpu: str = "", time_limit_seconds: int = 0,
                   ) -> daemon_pb2.DeployRequest:
    creds = session.credentials(project_dir)
    return daemon_pb2.DeployRequest(
        project_dir=str(project_dir), follow=follow, provider=provider,
        api_key=creds.api_key, coordinator_address=creds.coordinator_address,
        tls=creds.daemon_tls, array=array, command=list(command), gpu=gpu,
        time_limit_seconds=time_limit_seconds, requested_at=requested_now(),
    )


def run_followed(request: daemon_pb2.DeployRequest, view: RunView) -> NoReturn:
    """Deploy (following when the request says so) and exit as the job ended."""
    detach = _Detach()
    try:
        code = run(follow_deploy(request, view, detach))
    except KeyboardInterrupt:
        view.end()
        render.err.print(f"\n{detach.message()}")
        raise SystemExit(exitcodes.INTERRUPTED) from None
    raise SystemExit(code)


@click.command(epilog=exitcodes.HELP)
@click.option("-f", "--follow", is_flag=True, help="Stream the job's status and output until it ends.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object describing the job (one line per job with --array).")
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
@click.option("--watch", "watch_mode", is_flag=True, help="Redeploy on every save (as `c3ctl watch`).")
@click.option("--array", "array", type=int, default=None, metavar="N",
              help=f"Push once and submit N jobs of this spec (1..{MAX_JOBS_PER_SUBMIT}), a sweep: each job "
              "gets C3_ARRAY_INDEX (0..N-1) and C3_ARRAY_SIZE (N); their ids print one per line.")
@verbosity_options
def deploy(follow: bool, as_json: bool, provider: str, watch_mode: bool, array: int | None,
           verbose: bool, quiet: bool) -> None:
    """Push the project (nearest .c3 upward) and run it.

    With -f, the exit status is the job's: see "Exit status" below.
    """
    mode = mode_of(verbose, quiet)
    if array is not None:
        _check_array(array, follow, watch_mode)
    if watch_mode:
        if as_json:
            raise click.UsageError("--watch streams every run; it cannot be combined with --json")
        from c3ctl.cmd_watch import watch_project

        watch_project(provider, (), mode)
        return
    if as_json and follow:
        raise click.UsageError("--json cannot be combined with -f: use `c3ctl logs -f JOB` to follow")
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)  # fail fast, with file:line, before any daemon work
    request = deploy_request(cfg_path.parent.resolve(), follow=follow, provider=provider,
                             array=array or 0)
    # Without -f: the lines deploy always printed (and the job id on stdout).
    run_followed(request, RunView(mode if follow else Mode.VERBOSE, follow=follow, as_json=as_json))

