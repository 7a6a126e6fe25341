"""`c3ctl daemon …` and `c3ctl ls-files`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from c3 import config as project_config
from c3.errors import FailedPrecondition
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
            await d.shutdown(force=True)
            return (await d.ensure_running()).pid

    render.err.print(f"c3d restarted (pid {run(go())})")


@daemon.command("logs")
def daemon_logs() -> None:
    path = c3_paths().daemon_log
    click.echo(path.read_text() if path.exists() else "", nl=False)


@click.command("ls-files")
@click.option("--ignored", is_flag=True, help="Show what is left out and which rule excluded it.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: files with path and size (with --ignored: path and rule).")
def ls_files(ignored: bool, as_json: bool) -> None:
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
    if as_json:
        if ignored:
            data: dict[str, object] = {"ignored": [{"path": f.path, "rule": f.rule} for f in reply.files]}
        else:
            data = {"files": [{"path": f.path, "size": f.size} for f in reply.files],
                    "total_files": len(reply.files), "total_size": reply.total_size}
        click.echo(json.dumps(data))
        return
    for f in reply.files:
        click.echo(f"{f.path}\t{f.rule}" if ignored else f"{render.human_bytes(f.size):>10}  {f.path}")
    if not ignored:
        render.err.print(f"{len(reply.files)} files, {render.human_bytes(reply.total_size)}")


def systemd_unit() -> str:
    """A systemd user unit that keeps c3d running for this installation."""
    env_lines = "".join(
        f"Environment={name}={os.environ[name]}\n" for name in ("C3_HOME",) if os.environ.get(name)
    )
    return (
        "[Unit]\n"
        "Description=c3 daemon (deploy on save, local job history)\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={sys.executable} -m c3d.main\n"
        f"{env_lines}"
        "Restart=on-failure\n"
        "RestartSec=2\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _systemd_user_available() -> bool:
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


@daemon.command("install")
@click.option("--print", "print_only", is_flag=True, help="Only print the unit file.")
def daemon_install(print_only: bool) -> None:
    """Install c3d as a systemd user service (or print the unit where systemd is absent)."""
    unit = systemd_unit()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    target = config_home / "systemd" / "user" / "c3d.service"
    if print_only or not _systemd_user_available():
        if not print_only:
            render.err.print(
                f"systemd is not running here; save this as {target} where it is "
                "(or start c3d from your login shell):"
            )
        click.echo(unit, nl=False)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit)
    result = subprocess.run(
        ["systemctl", "--user", "enable", "--now", "c3d.service"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise FailedPrecondition(
            f"wrote {target} but `systemctl --user enable --now c3d` failed: {result.stderr.strip()}"
        )
    render.err.print(f"installed and started {target}")
