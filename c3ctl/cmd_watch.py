"""`c3ctl watch`: deploy on every save, following the current run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
import grpc

from c3 import config as project_config
from c3.errors import from_rpc_error
from c3.v1 import daemon_pb2
from c3ctl import exitcodes, render, session
from c3ctl.aio import run
from c3ctl.cmd_deploy import verbosity_options
from c3ctl.cmd_run import check_command
from c3ctl.daemon_client import DaemonConnection
from c3ctl.runview import Mode, RunView, mode_of


async def _watch(project_dir: Path, provider: str, command: Sequence[str], mode: Mode) -> None:
    creds = session.credentials(project_dir)
    request = daemon_pb2.WatchRequest(
        project_dir=str(project_dir), provider=provider,
        api_key=creds.api_key, coordinator_address=creds.coordinator_address,
        tls=creds.daemon_tls, command=list(command),
    )
    view = RunView(mode)
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        try:
            async for event in daemon.stub.Watch(request):
                view.handle(event)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            view.end()


async def _set_paused(project_dir: Path, paused: bool) -> bool:
    async with DaemonConnection() as daemon:
        await daemon.ensure_running()
        reply = await daemon.stub.SetWatchPaused(
            daemon_pb2.SetWatchPausedRequest(project_dir=str(project_dir), paused=paused)
        )
        return bool(reply.watching)


def watch_project(provider: str, command: Sequence[str], mode: Mode) -> None:
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)
    if mode is Mode.VERBOSE:
        render.err.print(f"watching {cfg_path.parent}: every save deploys (Ctrl-C stops watching)")
    try:
        run(_watch(cfg_path.parent.resolve(), provider, command, mode))
    except KeyboardInterrupt:
        if mode is not Mode.QUIET:
            render.err.print("\nstopped watching; the current run keeps going (`c3ctl squeue`)")
        raise SystemExit(exitcodes.INTERRUPTED) from None


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
@click.option("--pause", is_flag=True, help="Pause deploy-on-save for this project.")
@click.option("--resume", is_flag=True, help="Resume it (deploys once if files changed meanwhile).")
@verbosity_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS]...]")
def watch(provider: str, pause: bool, resume: bool, verbose: bool, quiet: bool,
          command: tuple[str, ...]) -> None:
    """Redeploy the project on every save, superseding the previous run.

    With `-- CMD ARGS...` every run runs that command instead of the .c3 file's script
    (as `c3 run` does). Watch keeps going whatever a run's exit status.
    """
    mode = mode_of(verbose, quiet)
    if pause or resume:
        if pause and resume:
            raise click.UsageError("--pause and --resume exclude each other")
        root = project_config.find_project_file(Path.cwd()).parent.resolve()
        if not run(_set_paused(root, pause)):
            render.err.print(f"{root} is not being watched (start `c3ctl watch` there first)")
            raise SystemExit(1)
        render.err.print(f"watch {'paused' if pause else 'resumed'} for {root}")
        return
    watch_project(provider, check_command(command, required=False), mode)
