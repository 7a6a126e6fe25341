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
from c3.storage.hashindex import HashIndex
from c3.unixsock import socket_accepts
from c3.v1 import daemon_pb2_grpc
from c3d.connections import Connections
from c3d.history import History
from c3d.pipeline import Pusher
from c3d.projects import Projects
from c3d.server import DaemonService

log = logging.getLogger("c3d")


async def serve(socket_path: Path) -> None:
    paths = c3_paths()
    ensure_private_dir(socket_path.parent)
    if socket_path.exists() and socket_accepts(socket_path):
        raise SystemExit(f"c3d: another daemon is already listening on {socket_path}")
    socket_path.unlink(missing_ok=True)  # stale socket from a crashed daemon
    ensure_private_dir(paths.daemon_state_dir)
    index = HashIndex(paths.daemon_state_dir / "index.sqlite")
    await index.open()
    shutdown = asyncio.Event()
    projects = Projects(index)
    history = await History(paths.daemon_state_dir / "history.sqlite").open()
    connections = Connections()
    service = DaemonService(Pusher(projects, history), connections, shutdown)
    old_umask = os.umask(0o177)  # the socket file is created 0600
    try:
        server = await grpcutil.create_server(
            f"unix:{socket_path}",
            [(daemon_pb2_grpc.add_DaemonServicer_to_server, service, "c3.v1.Daemon")],
        )
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    _write_pid(paths.daemon_pid_file)
    log.info("c3d %s listening on %s", os.getpid(), socket_path)
    await shutdown.wait()
    await server.stop(1.0)
    await connections.close()
    await projects.close()
    await history.close()
    await index.close()
    socket_path.unlink(missing_ok=True)
    paths.daemon_pid_file.unlink(missing_ok=True)


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
