"""`c3ctl daemon …` and `c3ctl ls-files`."""

from __future__ import annotations

from pathlib import Path

import click

from c3 import config as project_config
from c3.paths import c3_paths
from c3.v1 import daemon_pb2
from c3ctl import render
from c3ctl.aio import run
from c3ctl.daemon_client import DaemonConnection


@click.group()
def daemon() -> None:
    """Control the background daemon c3d."""


@daemon.command("status")
def daemon_status() -> None:
    async def go() -> daemon_pb2.DaemonStatusResponse | None:
        async with DaemonConnection() as d:
            return await d.status()

    reply = run(go())
    if reply is None:
        render.out.print("c3d is not running (it starts on the next deploy)")
    else:
        render.out.print(f"c3d {reply.version} pid {reply.pid}, up {reply.uptime_seconds:.0f}s")


@daemon.command("stop")
def daemon_stop() -> None:
    async def go() -> bool:
        async with DaemonConnection() as d:
            return await d.shutdown()

    render.err.print("c3d stopped" if run(go()) else "c3d was not running")


@daemon.command("restart")
def daemon_restart() -> None:
    async def go() -> int:
        async with DaemonConnection() as d:
            await d.shutdown()
            return (await d.ensure_running()).pid

    render.err.print(f"c3d restarted (pid {run(go())})")


@daemon.command("logs")
def daemon_logs() -> None:
    path = c3_paths().daemon_log
    click.echo(path.read_text() if path.exists() else "", nl=False)


@click.command("ls-files")
@click.option("--ignored", is_flag=True, help="Show what is left out and which rule excluded it.")
def ls_files(ignored: bool) -> None:
    """Print exactly what a deploy would ship, with sizes and totals."""
    root = project_config.find_project_file(Path.cwd()).parent.resolve()

    async def go() -> daemon_pb2.ListFilesResponse:
        async with DaemonConnection() as d:
            await d.ensure_running()
            reply: daemon_pb2.ListFilesResponse = await d.stub.ListFiles(
                daemon_pb2.ListFilesRequest(project_dir=str(root), ignored=ignored)
            )
            return reply

    reply = run(go())
    for f in reply.files:
        click.echo(f"{f.path}\t{f.rule}" if ignored else f"{render.human_bytes(f.size):>10}  {f.path}")
    if not ignored:
        render.err.print(f"{len(reply.files)} files, {render.human_bytes(reply.total_size)}")
