"""`c3ctl up`, `down`, `status`: the embedded local stack."""

from __future__ import annotations

import json

import click

from c3 import grpcutil
from c3ctl import render
from c3ctl.aio import run
from c3ctl.daemon_client import DaemonConnection
from c3ctl.stack import LocalStack


@click.command()
@click.option("--coordinator-port", default=7430, show_default=True, type=int)
@click.option("--storage-port", default=7431, show_default=True, type=int)
@click.option("--tls", is_flag=True, help="TLS on every hop (certificates generated in the stack dir).")
def up(coordinator_port: int, storage_port: int, tls: bool) -> None:
    """Start coordinator, storaged and a local agent on loopback."""
    stack = LocalStack()
    state = run(stack.up(coordinator_port=coordinator_port, storage_port=storage_port, tls=tls))
    render.err.print(
        f"local stack up: coordinator {state.coordinator_address}, storage {state.storage_address}, "
        f"1 agent (data in {stack.root})"
    )


@click.command()
def down() -> None:
    """Stop the local stack started by `c3ctl up`."""
    stopped = run(LocalStack().down())
    render.err.print(f"stopped: {', '.join(stopped)}" if stopped else "local stack was not running")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Show what is running: the local stack and the daemon."""
    stack = LocalStack()
    components = stack.status()
    state = stack.state()

    async def probe() -> tuple[bool, int]:
        healthy = bool(state.coordinator_address) and await grpcutil.check_health(
            state.coordinator_address, 1.0, stack.channel_credentials(state.tls)
        )
        async with DaemonConnection() as daemon:
            reply = await daemon.status()
        return healthy, reply.pid if reply else 0

    healthy, daemon_pid = run(probe())
    if as_json:
        click.echo(json.dumps({
            "stack": {c.name: {"pid": c.pid, "running": c.running} for c in components},
            "coordinator": state.coordinator_address, "storage": state.storage_address,
            "coordinator_healthy": healthy, "daemon_pid": daemon_pid or None,
        }))
        return
    for c in components:
        mark = "[green]running[/]" if c.running else "[dim]stopped[/]"
        render.out.print(f"{c.name:<12} {mark}" + (f"  pid {c.pid}" if c.running else ""))
    render.out.print(f"{'c3d':<12} " + (f"[green]running[/]  pid {daemon_pid}" if daemon_pid else "[dim]stopped[/]"))
    if state.coordinator_address:
        render.out.print(f"coordinator  {state.coordinator_address} ({'healthy' if healthy else 'not answering'})")
