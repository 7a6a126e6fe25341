"""An in-process coordinator, a simulated agent that speaks the real AgentGateway protocol
over a real gRPC stream, and `Stack`: the coordinator with a client channel and the
bootstrap org's key, optionally with a real storaged beside it and a real `c3-agent`
process connected to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from c3.grpcutil import bearer, channel
from c3.manifest import build, sha256_file
from c3.storage.client import LocalBlob, StorageClient
from c3.tokens import TokenSigner
from c3.v1 import agent_pb2, agent_pb2_grpc, common_pb2, coordinator_pb2_grpc
from c3.v1 import coordinator_pb2 as pb
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig
from coordinator.lifecycle import FINISHED
from storaged.server import StoragedServer
from tests.harness.processes import kill_now, start_agent_process
from tests.harness.storage import start_storaged
from tests.harness.waiting import eventually

# The states a job's event stream ends on.
ENDED = {
    common_pb2.JOB_STATE_COMPLETED,
    common_pb2.JOB_STATE_FAILED,
    common_pb2.JOB_STATE_CANCELED,
    common_pb2.JOB_STATE_TIMED_OUT,
}


@dataclass(frozen=True)
class Bootstrap:
    org_id: str
    api_key: str
    agent_secret: str


def config_for_test(data_dir: Path, **overrides: Any) -> CoordinatorConfig:
    base = CoordinatorConfig(
        data_dir=data_dir,
        signing_key=data_dir / "signing-key.pem",
        listen="127.0.0.1:0",
        storage_address="127.0.0.1:7431",
        heartbeat_ms=200,
        bootstrap_file=data_dir / "bootstrap.json",
        # Tests of other things must not trip over the free plan's limit of one job.
        concurrency_limits=(("free", 0),),
    )
    return replace(base, **overrides)


async def start_coordinator(config: CoordinatorConfig) -> tuple[Coordinator, Bootstrap]:
    app = await Coordinator.start(config)
    assert config.bootstrap_file is not None
    raw = json.loads(config.bootstrap_file.read_text())
    return app, Bootstrap(raw["org_id"], raw["api_key"], raw["agent_secret"])


def client(ch: aio.Channel) -> coordinator_pb2_grpc.CoordinatorAsyncStub:
    return coordinator_pb2_grpc.CoordinatorStub(ch)


class SimAgent:
    """A fake GPU host: registers, holds the stream, answers as the test tells it."""

    def __init__(
        self,
        address: str,
        secret: str,
        profile: str = "l40s-1x",
        gpu_class: str = "l40",
        provider: str = "local",
        cached_projects: tuple[str, ...] = (),
        cached_env_hashes: tuple[str, ...] = (),
    ) -> None:
        self.address = address
        self.secret = secret
        self.caps = agent_pb2.AgentCapabilities(
            profile=profile, gpu_class=gpu_class, gpu_count=1, provider=provider,
            capacity=1, hostname="sim",
        )
        self.cached_projects = cached_projects
        self.cached_env_hashes = cached_env_hashes
        self.agent_id = ""
        self.credential = ""
        self.inbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None] = asyncio.Queue()
        # ResumeLogs (first on every stream) go here, so `inbox` holds only the rest.
        self.resumes: asyncio.Queue[agent_pb2.ResumeLogs] = asyncio.Queue()
        self._channel = channel(address)
        self._stub = agent_pb2_grpc.AgentGatewayStub(self._channel)
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        # Jobs assigned and not yet reported finished: what a kept-alive heartbeat lists.
        self.holding: set[str] = set()

    async def retarget(self, address: str) -> None:
        """Talk to a coordinator at a new address (after a restart), same identity."""
        await self.close()
        self.address = address
        self._channel = channel(address)
        self._stub = agent_pb2_grpc.AgentGatewayStub(self._channel)

    async def register(self) -> agent_pb2.RegisterAgentResponse:
        reply = await self._stub.Register(
            agent_pb2.RegisterAgentRequest(
                secret=self.credential or self.secret,
                agent_id=self.agent_id,
                capabilities=self.caps,
                cached_projects=self.cached_projects,
                cached_env_hashes=self.cached_env_hashes,
            )
        )
        self.agent_id, self.credential = reply.agent_id, reply.credential
        return reply

    async def connect(self, running: tuple[str, ...] = ()) -> None:
        """Open the stream and wait until the coordinator holds it (first heartbeat sent,
        listing the jobs this agent still runs, as a real agent does)."""
        self._call = self._stub.Connect(metadata=bearer(self.credential))
        self._reader = asyncio.create_task(self._read(self._call))
        await self.heartbeat(running)
        await self._call.wait_for_connection()

    async def _read(self, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is aio.EOF:
                    break
                if message.HasField("assignment"):
                    self.holding.add(message.assignment.job.id)
                if message.HasField("resume_logs"):
                    await self.resumes.put(message.resume_logs)
                    continue
                await self.inbox.put(message)
        except (grpc.RpcError, asyncio.CancelledError):
            pass
        finally:
            self.inbox.put_nowait(None)

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        await self._call.write(message)

    async def heartbeat(self, running: tuple[str, ...] = ()) -> None:
        await self.send(
            agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(running_job_ids=running))
        )

    def keep_alive(self, every_s: float) -> None:
        """Heartbeat in the background as a live agent does, listing the jobs it holds, so
        only the agents a test drops go silent; stops with drop() or close()."""

        async def beat() -> None:
            while self._call is not None:
                await self.heartbeat(tuple(sorted(self.holding)))
                await asyncio.sleep(every_s)

        self._keepalive = asyncio.create_task(beat())

    async def next(self, timeout: float = 10.0) -> agent_pb2.CoordinatorMessage | None:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def assignment(self, timeout: float = 10.0) -> agent_pb2.Assignment:
        message = await self.next(timeout)
        assert message is not None and message.HasField("assignment"), message
        return message.assignment

    async def report(self, job_id: str, state: int, **fields: Any) -> None:
        update = agent_pb2.JobStatusUpdate(job_id=job_id, state=state, **fields)  # type: ignore[arg-type]
        if state in FINISHED:
            self.holding.discard(job_id)
        await self.send(agent_pb2.AgentMessage(status=update))

    async def resume(self, timeout: float = 10.0) -> agent_pb2.ResumeLogs:
        """The ResumeLogs the coordinator sent on a stream (the oldest not yet taken)."""
        return await asyncio.wait_for(self.resumes.get(), timeout)

    async def log(self, job_id: str, *texts: str, first_index: int = 0) -> None:
        """Send lines; with `first_index`, numbered from it as a current agent does."""
        lines = [
            common_pb2.LogLine(
                stream=common_pb2.LOG_STREAM_STDOUT, text=t,
                index=first_index + i if first_index else 0,
            )
            for i, t in enumerate(texts)
        ]
        await self.send(agent_pb2.AgentMessage(logs=agent_pb2.LogBatch(job_id=job_id, lines=lines)))

    async def drop(self) -> None:
        """Vanish without a word (the host died): the coordinator must notice by silence."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
            self._keepalive = None
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._call = None

    async def close(self) -> None:
        await self.drop()
        await self._channel.close()


def spec(**fields: Any) -> common_pb2.JobSpec:
    base: dict[str, Any] = {
        "project": "demo",
        "script": "run.sh",
        "workspace_manifest_digest": "ab" * 32,
    }
    base.update(fields)
    return common_pb2.JobSpec(**base)


async def connected_agent(app: Coordinator, boot: Bootstrap, **kw: Any) -> SimAgent:
    """A SimAgent registered and connected to `app`, once the coordinator counts it idle."""
    agent = SimAgent(app.address, boot.agent_secret, **kw)
    await agent.register()
    await agent.connect()
    await eventually(
        lambda: agent.agent_id in {a.id for a in app.scheduler.idle_agents()}, what="idle agent"
    )
    return agent


class Stack:
    """A real coordinator with a client channel and the bootstrap org's key, and the steps
    tests take against it; with `storaged`, a real storaged the coordinator uses (`signer`
    signs for both), and with `agent`, a real `c3-agent` process connected to it."""

    def __init__(
        self,
        app: Coordinator,
        boot: Bootstrap,
        ch: aio.Channel,
        *,
        storaged: StoragedServer | None = None,
        signer: TokenSigner | None = None,
        agent: subprocess.Popen[bytes] | None = None,
        agent_dir: Path | None = None,
    ) -> None:
        self.app, self.boot, self.channel = app, boot, ch
        self.c = client(ch)
        self.md = bearer(boot.api_key)
        self.storaged, self.signer = storaged, signer
        self._agent, self.agent_dir = agent, agent_dir
        self.closed = False

    @property
    def agent(self) -> subprocess.Popen[bytes]:
        """The `c3-agent` process."""
        assert self._agent is not None, "this stack has no agent process"
        return self._agent

    @property
    def api_key(self) -> str:
        return self.boot.api_key

    @property
    def address(self) -> str:
        return self.app.address

    @property
    def storage_address(self) -> str:
        return self.app.config.storage_address

    async def close(self) -> None:
        """Stop everything still running: the agent (SIGTERM), the coordinator, storaged."""
        if self.closed:
            return
        self.closed = True
        if self._agent is not None and self._agent.poll() is None:
            self._agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self._agent.wait, 20)
        await self.channel.close()
        await self.app.stop()
        await self.stop_storage()

    async def restart_coordinator(self) -> None:
        """Stop the coordinator and start it again on the same address and data dir."""
        await self.channel.close()
        config = self.app.config
        await self.app.stop()
        self.app, _ = await start_coordinator(replace(config, listen=self.address))
        self.channel = channel(self.address)
        self.c = client(self.channel)

    async def stop_storage(self) -> None:
        """Stop storaged (for good): storage calls fail from now on."""
        if self.storaged is not None:
            server, self.storaged = self.storaged, None
            await server.stop(grace=0)

    def job_workspace(self, job_id: str) -> Path:
        """Host path of a running job's workspace (inside the agent's data dir)."""
        assert self.agent_dir is not None, "this stack has no agent process"
        return self.agent_dir / "jobs" / job_id / "workspace"

    async def sim_agent(self, **kw: Any) -> SimAgent:
        return await connected_agent(self.app, self.boot, **kw)

    async def submit(self, md: Any = None, **kw: Any) -> common_pb2.Job:
        request = pb.SubmitJobRequest(spec=spec(**kw.pop("spec", {})), **kw)
        return (await self.c.SubmitJob(request, metadata=md or self.md)).job

    async def get(self, job_id: str, md: Any = None) -> common_pb2.Job:
        return (await self.c.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md or self.md)).job

    def state(self, job_id: str) -> int:
        return int(self.app.jobs.jobs[job_id].state)

    def resident(self, job_id: str) -> bool:
        """Whether the coordinator holds the job in memory (coordinator/residency.py)."""
        return job_id in self.app.jobs.jobs

    async def ids(self, **request: Any) -> list[str]:
        reply = await self.c.ListJobs(pb.ListJobsRequest(**request), metadata=self.md)
        return [j.id for j in reply.jobs]

    async def events(self, job_id: str) -> list[common_pb2.JobEvent]:
        stream = self.c.StreamJobEvents(
            pb.StreamJobEventsRequest(job_id=job_id, follow=True), metadata=self.md
        )
        return [e async for e in stream]


@contextlib.asynccontextmanager
async def start_stack(
    coordinator_dir: Path,
    *,
    storage_dir: Path | None = None,
    storage_gc: bool = True,
    agent_dir: Path | None = None,
    agent_args: Sequence[str] = (),
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """A coordinator on `coordinator_dir` (config_for_test with `overrides`); with
    `storage_dir`, a storaged there first; with `agent_dir`, a real `c3-agent` process
    (with `agent_args`) there, connected and idle before this yields. Everything started
    is stopped on exit, and a start that fails half-way stops what it had started."""
    async with contextlib.AsyncExitStack() as started:
        signer = storaged = agent = None
        if storage_dir is not None:
            signer = TokenSigner.load_or_create(coordinator_dir / "signing-key.pem")
            storaged = await start_storaged(storage_dir, signer, gc=storage_gc)
            started.push_async_callback(storaged.stop, 0)
            overrides.setdefault("storage_address", storaged.address)
        app, boot = await start_coordinator(config_for_test(coordinator_dir, **overrides))
        started.push_async_callback(app.stop)
        if agent_dir is not None:
            agent = await start_agent_process(app.address, coordinator_dir, agent_dir, agent_args)
            started.callback(kill_now, agent)
        stack = Stack(
            app, boot, channel(app.address), storaged=storaged, signer=signer, agent=agent,
            agent_dir=agent_dir,
        )
        started.pop_all()
    try:
        if agent is not None:
            await eventually(lambda: list(stack.app.scheduler.idle_agents()), timeout=30,
                             what="the agent to register and connect")
        yield stack
    finally:
        await stack.close()


def start_agent_stack(tmp_path: Path, *agent_args: str) -> contextlib.AbstractAsyncContextManager[Stack]:
    """Coordinator and storaged in this process, a real `c3-agent` process with
    `agent_args`: the layout the agent tests and the agent benchmark use."""
    return start_stack(
        tmp_path / "coord", storage_dir=tmp_path / "store", agent_dir=tmp_path / "agent",
        agent_args=agent_args,
    )


def pool_stack(tmp_path: Path, pools: str) -> contextlib.AbstractAsyncContextManager[Stack]:
    """storaged and a coordinator whose `--pool-config` file holds `pools`."""
    (tmp_path / "pools.yaml").write_text(pools)
    return start_stack(
        tmp_path, storage_dir=tmp_path / "store", heartbeat_ms=500,
        pool_config=tmp_path / "pools.yaml",
    )


async def push_workspace(stack: Stack, root: Path) -> str:
    return await push_tree(stack.channel, stack.api_key, root)


async def submit_and_wait(stack: Stack, **fields: Any) -> tuple[common_pb2.Job, list[common_pb2.JobEvent]]:
    """Submit a job, follow its events to the end; (the finished job, its events)."""
    fields.setdefault("project", "demo")
    request = pb.SubmitJobRequest(spec=common_pb2.JobSpec(**fields))
    job = (await stack.c.SubmitJob(request, metadata=stack.md)).job
    events: list[common_pb2.JobEvent] = []
    await asyncio.wait_for(events_until_done(stack, job.id, events), 60)
    return await stack.get(job.id), events


async def events_until_done(
    stack: Stack,
    job_id: str,
    seen: list[common_pb2.JobEvent],
    on_event: Callable[[common_pb2.JobEvent], Awaitable[None]] | None = None,
) -> common_pb2.JobState.ValueType:
    """Follow the job's events into `seen` (each also to `on_event`) until it ends; its
    final state."""
    stream = stack.c.StreamJobEvents(
        pb.StreamJobEventsRequest(job_id=job_id, follow=True), metadata=stack.md
    )
    async for event in stream:
        seen.append(event)
        if on_event is not None:
            await on_event(event)
        if event.HasField("status") and event.status.state in ENDED:
            return event.status.state
    raise AssertionError("event stream ended before the job finished")


async def push_tree(ch: aio.Channel, api_key: str, root: Path) -> str:
    """Upload the files under `root` (paths relative to it, executable bits kept) with a
    storage token from the coordinator on `ch`; returns the manifest digest."""
    reply = await client(ch).IssueStorageToken(
        pb.IssueStorageTokenRequest(), metadata=bearer(api_key)
    )
    entries, blobs = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest, size = sha256_file(path)
        blobs.append(LocalBlob(path, digest, size))
        entries.append(common_pb2.ManifestEntry(
            path=path.relative_to(root).as_posix(), digest=digest, size=size,
            executable=os.access(path, os.X_OK),
        ))
    async with StorageClient(reply.storage_address, reply.token) as storage:
        await storage.push_files(blobs)
        return await storage.put_manifest(build(entries))
