"""The embedded local stack: coordinator, storaged and one agent as background processes.

All state lives under `c3_paths().stack_dir`; `stack.json` there records what `up`
started (pids and addresses) so `down` stops exactly that and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from c3 import grpcutil
from c3.certs import DEFAULT_HOSTS, CertFiles
from c3.certs import generate as generate_certs
from c3.errors import FailedPrecondition, Unavailable
from c3.paths import c3_paths, ensure_private_dir
from c3.tls import channel_credentials
from c3.tokens import TokenSigner
from c3.userconfig import TlsSettings, update_user_config

START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
COMPONENTS = ("storaged", "coordinator", "agent")


@dataclass
class StackState:
    pids: dict[str, int] = field(default_factory=dict)
    coordinator_address: str = ""
    storage_address: str = ""
    tls: bool = False

    @classmethod
    def load(cls, path: Path) -> StackState:
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return cls()
        return cls(
            pids={k: int(v) for k, v in raw.get("pids", {}).items()},
            coordinator_address=raw.get("coordinator_address", ""),
            storage_address=raw.get("storage_address", ""),
            tls=bool(raw.get("tls", False)),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool


class LocalStack:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or c3_paths().stack_dir
        self.state_file = self.root / "stack.json"
        self.logs = self.root / "logs"

    # -- inspection -------------------------------------------------------------------

    def state(self) -> StackState:
        return StackState.load(self.state_file)

    def _is_ours(self, pid: int) -> bool:
        """Alive, and (where /proc exists) started with this stack's directory."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            try:
                return str(self.root).encode() in cmdline.read_bytes()
            except OSError:
                return False
        return True

    def status(self) -> list[ComponentStatus]:
        state = self.state()
        return [
            ComponentStatus(name, state.pids.get(name, 0), bool(state.pids.get(name))
                            and self._is_ours(state.pids[name]))
            for name in COMPONENTS
        ]

    # -- start ------------------------------------------------------------------------

    @property
    def certs_dir(self) -> Path:
        return self.root / "tls"

    def channel_credentials(self, tls: bool) -> grpc.ChannelCredentials | None:
        return channel_credentials(self.certs_dir / "ca.pem") if tls else None

    async def up(
        self, *, coordinator_port: int = 7430, storage_port: int = 7431, tls: bool = False
    ) -> StackState:
        """Start whatever is not running; harmless when everything already is. With `tls`
        every hop (CLI, c3d, agent, coordinator, storaged) uses TLS with certificates
        generated into the stack directory."""
        ensure_private_dir(self.root)
        self.logs.mkdir(exist_ok=True)
        state = self.state()
        running = {s.name for s in self.status() if s.running}
        if running and state.tls != tls:  # switching TLS on or off restarts everything
            await self.down()
            state, running = self.state(), set()
        if running == set(COMPONENTS) and await grpcutil.check_health(
            state.coordinator_address, 1.0, self.channel_credentials(tls)
        ):
            self._write_user_config(state)
            return state
        state.tls = tls
        tls_args: dict[str, list[str]] = {"storaged": [], "coordinator": [], "agent": []}
        if tls:
            certs = self._certificates()
            server = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
            tls_args["storaged"] = server
            tls_args["coordinator"] = [*server, "--storage-tls-ca", str(certs.ca_cert)]
            tls_args["agent"] = ["--tls-ca", str(certs.ca_cert), "--tls-cert",
                                 str(certs.agent_cert), "--tls-key", str(certs.agent_key)]
        # Only what is down is started, on the address it had: the parts still running, and
        # the jobs on them, carry on (agents reconnect to a restarted coordinator).
        signer = TokenSigner.load_or_create(self.root / "signing-key.pem")
        public_key = self.root / "token-public.pem"
        public_key.write_bytes(signer.public_key_pem())

        if "storaged" not in running:
            port = _port_of(state.storage_address, storage_port)
            state.storage_address = await self._start(
                state, "storaged",
                ["-m", "storaged.main", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(self.root / "storage"), "--token-public-key", str(public_key),
                 *tls_args["storaged"]],
            )
        if "coordinator" not in running:
            port = _port_of(state.coordinator_address, coordinator_port)
            state.coordinator_address = await self._start(
                state, "coordinator",
                ["-m", "coordinator.main", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(self.root / "coordinator"),
                 "--storage-address", state.storage_address,
                 "--signing-key", str(self.root / "signing-key.pem"),
                 "--bootstrap-file", str(self.root / "bootstrap.json"),
                 *tls_args["coordinator"]],
            )
        self._write_user_config(state)
        if "agent" not in running:
            await self._start(
                state, "agent",
                ["-m", "agent.main", "--coordinator", state.coordinator_address,
                 "--secret-file", str(self.root / "bootstrap.json"),
                 "--data-dir", str(self.root / "agent"), "--provider", "local",
                 *tls_args["agent"]],
                ready_file=False,
            )
        await self._wait_for_agent(state)
        return state

    def _certificates(self) -> CertFiles:
        """The stack's certificates, generated on first use and kept across restarts (a
        running part keeps trusting the same CA)."""
        existing = CertFiles(*(self.certs_dir / n for n in (
            "ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "agent.pem", "agent-key.pem")))  # fmt: skip
        if all(p.exists() for p in (existing.ca_cert, existing.server_cert, existing.agent_cert)):
            return existing
        return generate_certs(self.certs_dir, DEFAULT_HOSTS)

    async def _start(
        self, state: StackState, name: str, args: list[str], *, ready_file: bool = True
    ) -> str:
        ready = self.root / f"{name}.addr"
        ready.unlink(missing_ok=True)
        if ready_file:
            args = [*args, "--ready-file", str(ready)]
        proc = _spawn(args, self.logs / f"{name}.log")
        state.pids[name] = proc.pid
        state.save(self.state_file)
        if not ready_file:
            return ""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(
                    f"{name} exited during start (code {proc.returncode}); see {self.logs / (name + '.log')}"
                )
            if ready.exists():
                address = ready.read_text().strip()
                if address and await grpcutil.check_health(
                    address, 1.0, self.channel_credentials(state.tls)
                ):
                    return address
            await asyncio.sleep(0.05)
        raise Unavailable(f"{name} did not become healthy in {START_TIMEOUT_S:.0f}s; see {self.logs / (name + '.log')}")

    async def _wait_for_agent(self, state: StackState) -> None:
        from c3.v1 import coordinator_pb2, coordinator_pb2_grpc

        key = json.loads((self.root / "bootstrap.json").read_text())["api_key"]
        deadline = time.monotonic() + START_TIMEOUT_S
        async with grpcutil.channel(
            state.coordinator_address, self.channel_credentials(state.tls)
        ) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)
            while time.monotonic() < deadline:
                pid = state.pids["agent"]
                if not self._is_ours(pid):
                    raise Unavailable(f"agent exited during start; see {self.logs / 'agent.log'}")
                reply = await stub.ListHardware(
                    coordinator_pb2.ListHardwareRequest(), metadata=grpcutil.bearer(key), timeout=5
                )
                if any(p.available for p in reply.profiles):
                    return
                await asyncio.sleep(0.05)
        raise Unavailable(f"agent did not register in {START_TIMEOUT_S:.0f}s; see {self.logs / 'agent.log'}")

    def _write_user_config(self, state: StackState) -> None:
        bootstrap = json.loads((self.root / "bootstrap.json").read_text())
        tls = (
            TlsSettings(enabled=True, ca_file=str(self.certs_dir / "ca.pem"))
            if state.tls else TlsSettings()
        )  # fmt: skip
        update_user_config(
            coordinator=state.coordinator_address, api_key=bootstrap["api_key"], tls=tls
        )

    # -- stop -------------------------------------------------------------------------

    async def down(self) -> list[str]:
        """Stop what `up` started (agent first); return the names stopped."""
        state = self.state()
        stopped = []
        for name in reversed(COMPONENTS):
            pid = state.pids.get(name)
            if pid and self._is_ours(pid):
                os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
                stopped.append((name, pid))
        deadline = time.monotonic() + STOP_GRACE_S
        for _name, pid in stopped:
            while self._is_ours(pid) and time.monotonic() < deadline:
                _reap(pid)
                await asyncio.sleep(0.05)
            if self._is_ours(pid):
                os.killpg(pid, signal.SIGKILL) if _is_group_leader(pid) else os.kill(pid, signal.SIGKILL)
            _reap(pid)
        if self.root.exists():
            # A clean stop forgets the addresses: the next `up` binds the ports it is given.
            StackState().save(self.state_file)
        return [name for name, _ in stopped]

    def require_running(self) -> StackState:
        if not all(s.running for s in self.status()):
            raise FailedPrecondition("the local stack is not running; start it with `c3ctl up`")
        return self.state()


def _port_of(address: str, default: int) -> int:
    """The port of a saved "host:port", or `default` when nothing was saved."""
    if not address:
        return default
    return int(address.rsplit(":", 1)[1])


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `python ARGS` detached in its own session, output appended to log_path."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=_child_env(),
        )


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _reap(pid: int) -> None:
    """Collect a child that has exited so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("C3_API_KEY", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
