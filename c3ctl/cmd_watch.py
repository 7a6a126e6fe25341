"""`c3ctl watch`: deploy on every save, following the current run."""

from __future__ import annotations

import os
from pathlib import Path

import click

from c3 import config as project_config
from c3.v1 import daemon_pb2
from c3ctl import render, session
from c3ctl.aio import run
from c3ctl.cmd_deploy import show_event
from c3ctl.daemon_client import DaemonConnection


async def _watch(project_dir: Path, provider: str) -> None:
    creds = session.credentials(project_dir)
    request = daemon_pb2.WatchRequest(
        project_dir=str(project_dir), provider=provider,
        api_key=creds.api_key, coordinator_address=creds.coordinator_address,
        tls=creds.daemon_tls,
    )
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        async for event in daemon.stub.Watch(request):
            if event.HasField("notice") and event.notice.startswith("──"):
                render.err.print(f"\n[bold]{event.notice}[/]")
            else:
                show_event(event, follow=True, as_json=False)


async def _set_paused(project_dir: Path, paused: bool) -> bool:
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        reply = await daemon.stub.SetWatchPaused(
            daemon_pb2.SetWatchPausedRequest(project_dir=str(project_dir), paused=paused)
        )
        return bool(reply.watching)


def watch_project(provider: str) -> None:
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)
    render.err.print(f"watching {cfg_path.parent}: every save deploys (Ctrl-C stops watching)")
    try:
        run(_watch(cfg_path.parent.resolve(), provider))
    except KeyboardInterrupt:
        render.err.print("\nstopped watching; the current run keeps going (`c3ctl squeue`)")
        raise SystemExit(130) from None


@click.command()
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
@click.option("--pause", is_flag=True, help="Pause deploy-on-save for this project.")
@click.option("--resume", is_flag=True, help="Resume it (deploys once if files changed meanwhile).")
def watch(provider: str, pause: bool, resume: bool) -> None:
    """Redeploy the project on every save, superseding the previous run."""
    if pause or resume:
        if pause and resume:
            raise click.UsageError("--pause and --resume exclude each other")
        root = project_config.find_project_file(Path.cwd()).parent.resolve()
        if not run(_set_paused(root, pause)):
            render.err.print(f"{root} is not being watched (start `c3ctl watch` there first)")
            raise SystemExit(1)
        render.err.print(f"watch {'paused' if pause else 'resumed'} for {root}")
        return
    watch_project(provider)
