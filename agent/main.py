"""`c3-agent`: a GPU (or CPU) worker that dials the coordinator and runs jobs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from pathlib import Path

from agent.artifacts import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES, ArtifactLimits
from agent.cgroups import CgroupManager, agent_key, detect_cgroups
from agent.connection import Connection, Outbox, read_provisioning_secret
from agent.discovery import HostInfo, discover
from agent.diskwatch import DEFAULT_INTERVAL_SECONDS
from agent.docker import probe_docker
from agent.jobnet import JobNetwork
from agent.jobs import DEFAULT_BLOB_CACHE_BYTES, JobExecutor
from agent.probe import choose_sandbox
from agent.resources import (
    HostTotals,
    ResourceShare,
    ShareOverrides,
    compute_share,
    parse_size,
)
from agent.runner import DEFAULT_GRACE_SECONDS
from c3.errors import C3Error
from c3.service import Probe, Service, Steps, build
from c3.storage.client import StorageClient
from c3.tls import channel_credentials, warn_if_plaintext
from c3.v1 import agent_pb2

log = logging.getLogger("c3-agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="c3-agent", description=__doc__)
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                   help="address of the coordinator's AgentGateway")
    p.add_argument("--secret-file", required=True, type=Path,
                   help="provisioning secret: the coordinator's bootstrap JSON "
                        "(key agent_secret) or a plain-text file")
    p.add_argument("--data-dir", required=True, type=Path,
                   help="agent state: credential, blob/dataset/env caches, job dirs")
    p.add_argument("--profile", default="",
                   help="register as this profile (default: the coordinator decides from the GPUs)")
    p.add_argument("--provider", default="local")
    p.add_argument("--region", default="local")
    p.add_argument("--launch-id", default="", help=argparse.SUPPRESS)  # set by pool providers
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU indices this agent owns (default: all)")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="run jobs without bubblewrap when it cannot work on this host")
    p.add_argument("--job-network", default="egress", choices=[n.value for n in JobNetwork],
                   help="egress (default): jobs reach the outside from a network namespace "
                        "of their own, never this host's own services or link-local "
                        "addresses; none: loopback only")
    p.add_argument("--max-artifact-bytes", type=parse_size, default=DEFAULT_MAX_FILE_BYTES,
                   metavar="SIZE", help="largest artifact file a job may leave (default: "
                                        "the store's own limit, 64G)")
    p.add_argument("--max-artifact-files", type=int, default=DEFAULT_MAX_FILES,
                   help="most artifact files a job may leave")
    p.add_argument("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS,
                   help="time between SIGTERM and SIGKILL when a job is stopped")
    p.add_argument("--blob-cache-bytes", type=int, default=DEFAULT_BLOB_CACHE_BYTES)
    limits = p.add_argument_group(
        "resources", "a job's baseline share of the host, by default in proportion to this "
        "agent's fraction of the host's GPUs (the whole host for the cpu profile)")
    limits.add_argument("--share", type=float, default=None, metavar="FRACTION",
                        help="override the fraction of the host (0-1] a job gets")
    limits.add_argument("--memory", type=parse_size, default=None, metavar="SIZE",
                        help="memory baseline per job (e.g. 16G)")
    limits.add_argument("--memory-burst", type=float, default=1.0, metavar="FACTOR",
                        help="hard memory limit = baseline x FACTOR (default 1)")
    limits.add_argument("--cpus", type=float, default=None,
                        help="CPU share per job (a weight: jobs may burst while CPUs idle)")
    limits.add_argument("--pids-max", type=int, default=None, help="processes per job")
    limits.add_argument("--shm-size", type=parse_size, default=None, metavar="SIZE",
                        help="size of a job's /dev/shm")
    limits.add_argument("--disk-limit", type=parse_size, default=None, metavar="SIZE",
                        help="disk a job's workspace may use")
    limits.add_argument("--disk-check-seconds", type=float, default=DEFAULT_INTERVAL_SECONDS,
                        help="how often the workspace disk limit is checked")
    limits.add_argument("--no-cgroups", action="store_true",
                        help="do not enforce limits with cgroups")
    tls = p.add_argument_group("TLS (coordinator and storage connections)")
    tls.add_argument("--tls-ca", default="", help="CA that signed the servers' certificates")
    tls.add_argument("--tls-cert", default="", help="client certificate for mutual TLS")
    tls.add_argument("--tls-key", default="", help="client certificate key for mutual TLS")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _gpu_indices(value: str | None) -> list[int] | None:
    if value is None or value.strip() == "":
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise C3Error(f"--gpus {value!r}: expected comma-separated indices such as 0,1") from None


def _resources(args: argparse.Namespace, host: HostInfo, data_dir: Path, key: str
               ) -> tuple[ResourceShare, CgroupManager | None]:
    flags = ShareOverrides(fraction=args.share, memory_bytes=args.memory,
                           memory_burst=args.memory_burst, cpus=args.cpus,
                           pids_max=args.pids_max, shm_bytes=args.shm_size,
                           disk_bytes=args.disk_limit)
    try:
        share = compute_share(HostTotals.of_this_host(data_dir), host.gpu_fraction, flags)
    except ValueError as exc:
        raise C3Error(str(exc)) from exc
    manager: CgroupManager | None = None
    if args.no_cgroups:
        log.warning("cgroups disabled (--no-cgroups): memory, CPU and process limits are "
                    "NOT enforced")
    else:
        manager, problem = detect_cgroups(key)
        if manager is None:
            log.warning("%s; jobs run WITHOUT memory, CPU and process limits", problem)
        else:
            log.info("cgroup v%d: each job gets %s", manager.version, share.describe())
    return share, manager


class Agent(Service):
    """A running agent: registered (or registering) with the coordinator over its link,
    ready to run jobs. `run()` returns once the agent should go (a signal, or the
    coordinator released it); `stop()` stops what still runs, lets the final reports out
    (bounded) and closes the link. A start that fails half-way leaves nothing behind."""

    def __init__(self, steps: Steps, executor: JobExecutor, connection: Connection,
                 link: asyncio.Task[None]) -> None:
        super().__init__(steps.hand_over())
        self.executor = executor
        self.connection = connection
        self._link = link

    @classmethod
    async def start(cls, args: argparse.Namespace, probe: Probe | None = None) -> Agent:
        return await build(lambda steps: cls._build(steps, args), probe)

    @classmethod
    async def _build(cls, steps: Steps, args: argparse.Namespace) -> Agent:
        steps.step("host")
        secret = read_provisioning_secret(args.secret_file)
        data_dir: Path = args.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            host = await discover(_gpu_indices(args.gpus))
        except ValueError as exc:
            raise C3Error(str(exc)) from exc
        key = agent_key(data_dir)
        choice = await choose_sandbox(data_dir, JobNetwork(args.job_network), key)
        if choice.netpool is not None:
            steps.on_stop(choice.netpool.close)
        problem = choice.problem
        sandboxed = choice.policy is not None
        if problem:
            if args.allow_unsandboxed:
                log.warning("no sandbox: %s; running jobs UNSANDBOXED (--allow-unsandboxed)",
                            problem)
            else:
                log.error("no sandbox: %s; jobs will be refused (start with "
                          "--allow-unsandboxed to run them without one)", problem)
        log.info("host %s: %d GPU(s) %s [%s], sandbox %s", host.hostname, host.gpu_count,
                 host.gpu_model or "-", host.cuda_visible_devices or "-",
                 choice.policy.describe() if choice.policy else "none")
        share, cgroups = await asyncio.to_thread(_resources, args, host, data_dir, key)
        docker_problem = await probe_docker()
        if docker_problem:
            log.info("no container engine (%s): docker.image jobs are not offered", docker_problem)
        tls_creds = None
        if args.tls_ca or args.tls_cert:
            tls_creds = channel_credentials(args.tls_ca or None, args.tls_cert or None,
                                            args.tls_key or None)
        warn_if_plaintext(args.coordinator, tls_creds, "c3-agent")
        outbox = Outbox()
        links: list[Connection] = []  # the link, once made (the executor is made first)

        def on_idle() -> None:
            for link in links:
                link.heartbeat()

        steps.step("executor")
        # Built off the event loop: it removes a previous run's leftover job dirs (rmtree).
        executor = await asyncio.to_thread(
            JobExecutor,
            data_dir=data_dir, host=host, sandbox=choice.policy,
            unsandboxed_ok=args.allow_unsandboxed, emit=outbox.put, on_idle=on_idle,
            netpool=choice.netpool, network_problem=choice.network_problem,
            artifact_limits=ArtifactLimits(args.max_artifact_bytes, args.max_artifact_files),
            grace_seconds=args.grace_seconds, blob_cache_bytes=args.blob_cache_bytes,
            sandbox_problem=problem or "", cgroups=cgroups, share=share,
            docker=docker_problem is None, disk_interval=args.disk_check_seconds,
            storage_factory=(lambda addr, tok: StorageClient(addr, tok, credentials=tls_creds)),
        )
        steps.on_stop(executor.shutdown)  # whatever still runs is canceled and reported
        caps = agent_pb2.AgentCapabilities(
            profile=args.profile, gpu_count=host.gpu_count,
            gpu_model=host.gpu_model, gpu_memory_mib=host.gpu_memory_mib,
            provider=args.provider, region=args.region, capacity=1, docker=docker_problem is None,
            sandbox=sandboxed, hostname=socket.gethostname(), launch_id=args.launch_id,
        )
        steps.step("link")
        connection = Connection(address=args.coordinator, secret=secret, data_dir=data_dir,
                                capabilities=caps, executor=executor, outbox=outbox,
                                credentials=tls_creds)
        links.append(connection)
        link = steps.task(connection.run(), "agent-link")

        async def last_reports() -> None:
            # The jobs were stopped above; let their final reports out if the link is up.
            await executor.shutdown()
            if connection.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.wait_empty(), timeout=5)

        steps.on_stop(last_reports)
        return cls(steps, executor, connection, link)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set or the coordinator releases this agent (which lets the jobs
        it runs finish first)."""
        stopper = asyncio.ensure_future(stop.wait())
        released = asyncio.ensure_future(self.connection.released.wait())
        try:
            await asyncio.wait({self._link, stopper, released},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopper, released):
                task.cancel()
            await asyncio.gather(stopper, released, return_exceptions=True)
        if stop.is_set():
            log.info("stopping: canceling running jobs")
        else:
            await self.executor.wait_idle()


async def serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with await Agent.start(args) as agent:
        await agent.run(stop)
    log.info("agent stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s c3-agent %(levelname)s %(message)s")
    try:
        code = asyncio.run(serve(args))
    except C3Error as exc:
        print(f"c3-agent: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
