"""Helpers for tests and benchmarks: an in-process coordinator and a simulated agent
that speaks the real AgentGateway protocol over a real gRPC stream."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from c3.grpcutil import bearer, channel
from c3.manifest import build, sha256_file
from c3.storage.client import LocalBlob, StorageClient
from c3.v1 import agent_pb2, agent_pb2_grpc, common_pb2, coordinator_pb2_grpc
from c3.v1 import coordinator_pb2 as pb
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig
from coordinator.lifecycle import FINISHED


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


def client(ch: aio.Channel) -> coordinator_pb2_grpc.CoordinatorStub:
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
        )  # fmt: skip
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
        ]  # fmt: skip
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


async def eventually(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Re-check `predicate` (sync or async) until it is truthy, yielding to the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def spec(**fields: Any) -> common_pb2.JobSpec:
    base: dict[str, Any] = {
        "project": "demo",
        "script": "run.sh",
        "workspace_manifest_digest": "ab" * 32,
    }
    base.update(fields)
    return common_pb2.JobSpec(**base)


class Stack:
    """A real coordinator with a client channel and the bootstrap org's key, and the
    steps tests take against it."""

    def __init__(self, app: Coordinator, boot: Bootstrap, ch: aio.Channel) -> None:
        self.app, self.boot, self.ch = app, boot, ch
        self.c = client(ch)
        self.md = bearer(boot.api_key)
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.ch.close()
            await self.app.stop()

    async def agent(self, **kw: Any) -> SimAgent:
        agent = SimAgent(self.app.address, self.boot.agent_secret, **kw)
        await agent.register()
        await agent.connect()
        await eventually(
            lambda: agent.agent_id in {a.id for a in self.app.scheduler.idle_agents()},
            what="idle agent",
        )
        return agent

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
        ))  # fmt: skip
    async with StorageClient(reply.storage_address, reply.token) as storage:
        await storage.push_files(blobs)
        return await storage.put_manifest(build(entries))
