"""c3d: the user-local daemon, serving c3ctl over a unix socket."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from c3 import grpcutil
from c3.paths import c3_paths, ensure_private_dir
from c3.service import Probe, Service, Steps, build
from c3.storage.hashindex import HashIndex
from c3.unixsock import socket_accepts
from c3.v1 import daemon_pb2_grpc
from c3d.connections import Connections
from c3d.history import History
from c3d.pipeline import Pusher
from c3d.projects import Projects
from c3d.server import DaemonService

log = logging.getLogger("c3d")


class Daemon(Service):
    """A running c3d: `await Daemon.start(socket_path)`; it serves until `shutdown` is set
    (a signal, or `c3ctl daemon stop`). A start that fails half-way leaves no socket, no
    pid file and no open database behind (c3/service.py)."""

    def __init__(self, steps: Steps, shutdown: asyncio.Event) -> None:
        super().__init__(steps.hand_over())
        self.shutdown = shutdown

    @classmethod
    async def start(cls, socket_path: Path, probe: Probe | None = None) -> Daemon:
        return await build(lambda steps: cls._build(steps, socket_path), probe)

    @classmethod
    async def _build(cls, steps: Steps, socket_path: Path) -> Daemon:
        paths = c3_paths()
        steps.step("socket")
        ensure_private_dir(socket_path.parent)
        if socket_path.exists() and socket_accepts(socket_path):
            raise SystemExit(f"c3d: another daemon is already listening on {socket_path}")
        socket_path.unlink(missing_ok=True)  # stale socket from a crashed daemon
        # Last to go, once nothing answers on the socket any more.
        steps.on_stop_sync(lambda: paths.daemon_pid_file.unlink(missing_ok=True))
        steps.on_stop_sync(lambda: socket_path.unlink(missing_ok=True))
        ensure_private_dir(paths.daemon_state_dir)
        steps.step("hash index")
        index = HashIndex(paths.daemon_state_dir / "index.sqlite")
        await index.open()
        steps.on_stop(index.close)
        steps.step("history")
        history = await History(paths.daemon_state_dir / "history.sqlite").open()
        steps.on_stop(history.close)
        shutdown = asyncio.Event()
        projects = Projects(index)
        steps.on_stop(projects.close)
        connections = Connections()
        steps.on_stop(connections.close)
        steps.step("server")
        service = DaemonService(Pusher(projects, history), connections, shutdown)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            server = await grpcutil.create_server(
                f"unix:{socket_path}",
                [(daemon_pb2_grpc.add_DaemonServicer_to_server, service, "c3.v1.Daemon")],
            )
        finally:
            os.umask(old_umask)
        steps.on_stop(lambda: server.stop(1.0))
        os.chmod(socket_path, 0o600)
        steps.step("pid file")
        _write_pid(paths.daemon_pid_file)
        log.info("c3d %s listening on %s", os.getpid(), socket_path)
        return cls(steps, shutdown)


async def serve(socket_path: Path) -> None:
    async with await Daemon.start(socket_path) as daemon:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.shutdown.set)
        await daemon.shutdown.wait()


def _write_pid(path: Path) -> None:
    """So a daemon that stops answering can still be stopped (`c3ctl daemon restart`)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="c3d", description="c3's user-local daemon")
    parser.add_argument("--socket", type=Path, default=None, help="unix socket path")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("C3_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    socket_path = args.socket or c3_paths().daemon_socket
    try:
        asyncio.run(serve(socket_path))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
