"""`c3ctl deploy`: push the workspace through c3d, submit, and optionally follow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import grpc

from c3 import config as project_config
from c3.errors import from_rpc_error
from c3.v1 import common_pb2, daemon_pb2
from c3ctl import render, session
from c3ctl.aio import run
from c3ctl.daemon_client import DaemonConnection


def job_summary(job: common_pb2.Job) -> dict[str, object]:
    """The fields the C3 docs list for `deploy --json`."""
    return {
        "id": job.id,
        "status": render.state_name(job.state),
        "provider": job.provider or job.spec.provider or None,
        "region": job.region or None,
        "gpu_profile": job.gpu_profile or None,
        "route": {"pool": job.pool or None, "warm_pool_hit": bool(job.startup.warm_pool_hit)},
        "dashboard_url": None,
        "pull_command": f"c3ctl pull {job.id}",
    }


class _Detach:
    job_id = ""


async def _deploy(project_dir: Path, follow: bool, provider: str, as_json: bool, detach: _Detach) -> int:
    creds = session.credentials(project_dir)
    request = daemon_pb2.DeployRequest(
        project_dir=str(project_dir),
        follow=follow,
        provider=provider,
        api_key=creds.api_key,
        coordinator_address=creds.coordinator_address,
    )
    exit_code = 0
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        try:
            async for event in daemon.stub.Deploy(request):
                kind = event.WhichOneof("kind")
                if kind == "pushed":
                    if not as_json:
                        render.err.print(f"[dim]{render.push_stats(event.pushed)}[/]")
                elif kind == "notice":
                    render.err.print(f"[dim]{event.notice}[/]")
                elif kind == "submitted":
                    detach.job_id = event.submitted.id
                    if as_json:
                        click.echo(json.dumps(job_summary(event.submitted)))
                    else:
                        render.err.print(
                            f"submitted [bold]{event.submitted.id}[/] "
                            f"({event.submitted.spec.project}, gpu {event.submitted.spec.gpu or 'any'})"
                        )
                        if not follow:
                            click.echo(event.submitted.id)
                elif kind == "job_event":
                    render.job_event(event.job_event)
                elif kind == "finished":
                    job = event.finished
                    if job.state not in (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED):
                        exit_code = 1
                    else:
                        render.err.print(f"[dim]artifacts: c3ctl pull {job.id}[/]")
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
    return exit_code


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Stream the job's status and output until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object describing the job.")
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
def deploy(follow: bool, as_json: bool, provider: str) -> None:
    """Push the project (nearest .c3 upward) and run it."""
    if as_json and follow:
        raise click.UsageError("--json cannot be combined with -f: use `c3ctl logs -f JOB` to follow")
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)  # fail fast, with file:line, before any daemon work
    detach = _Detach()
    try:
        code = run(_deploy(cfg_path.parent.resolve(), follow, provider, as_json, detach))
    except KeyboardInterrupt:
        if detach.job_id:
            render.err.print(
                f"\ndetached; {detach.job_id} keeps running. Follow it with `c3ctl logs -f {detach.job_id}`"
            )
        else:
            render.err.print("\ninterrupted before the job was submitted; nothing is running")
        raise SystemExit(130) from None
    raise SystemExit(code)
