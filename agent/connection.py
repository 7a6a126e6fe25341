"""The agent's link to the coordinator: register, hold one bidirectional stream, send
heartbeats with jitter, and reconnect with backoff when the stream drops (a coordinator
restart), still reporting the job that kept running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.jobs import JobExecutor
from agent.logbatch import MAX_BATCH_LINES
from c3.errors import C3Error, Unauthenticated, from_rpc_error
from c3.grpcutil import bearer, channel
from c3.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

CREDENTIAL_FILE = "agent-credential.json"
MAX_QUEUED_LOG_BATCHES = 20_000
# Job reports queued together travel as one message of at most this many, and this size.
REPORTS_PER_MESSAGE = 64
REPORT_BYTES_PER_MESSAGE = 1 << 20
_REPORT_KINDS = ("status", "logs")
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0
# How long a new stream waits for the coordinator's ResumeLogs before it sends anyway
# (a coordinator that predates resumable log delivery never sends one).
RESUME_WAIT_S = 10.0


def read_provisioning_secret(path: Path) -> str:
    """The secret from the coordinator's bootstrap JSON (`agent_secret`) or a plain file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise Unauthenticated(f"cannot read --secret-file {path}: {exc.strerror}") from exc
    if text.startswith("{"):
        try:
            secret = json.loads(text).get("agent_secret", "")
        except (ValueError, AttributeError) as exc:
            raise Unauthenticated(f"--secret-file {path}: invalid JSON ({exc})") from exc
        if not secret:
            raise Unauthenticated(f"--secret-file {path}: no \"agent_secret\" key")
        return str(secret)
    if not text:
        raise Unauthenticated(f"--secret-file {path} is empty")
    return text


@dataclass
class Identity:
    agent_id: str = ""
    credential: str = ""

    @classmethod
    def load(cls, data_dir: Path) -> Identity:
        try:
            raw = json.loads((data_dir / CREDENTIAL_FILE).read_text())
            return cls(str(raw["agent_id"]), str(raw["credential"]))
        except (OSError, ValueError, KeyError):
            return cls()

    def save(self, data_dir: Path) -> None:
        path = data_dir / CREDENTIAL_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"agent_id": self.agent_id, "credential": self.credential}, f)
        os.replace(tmp, path)


class Outbox:
    """Messages for the coordinator, kept across reconnects (status updates are never
    dropped; log batches are dropped only past a large bound while disconnected)."""

    def __init__(self) -> None:
        self._items: deque[agent_pb2.AgentMessage] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._log_batches = 0

    def put(self, message: agent_pb2.AgentMessage) -> None:
        if message.HasField("logs"):
            if self._log_batches >= MAX_QUEUED_LOG_BATCHES:
                return
            self._log_batches += 1
        self._items.append(message)
        self._empty.clear()
        self._ready.set()

    def push_front(self, message: agent_pb2.AgentMessage) -> None:
        self._items.appendleft(message)
        self._empty.clear()
        if message.HasField("logs"):
            self._log_batches += 1
        self._ready.set()

    def drop_logs(self, job_ids: set[str]) -> None:
        """Remove the queued log batches of these jobs (a resend replaces them)."""
        kept = [m for m in self._items if not (m.HasField("logs") and m.logs.job_id in job_ids)]
        self._items = deque(kept)
        self._log_batches = sum(1 for m in kept if m.HasField("logs"))
        if not self._items:
            self._empty.set()

    def has_status(self, job_id: str) -> bool:
        return any(m.HasField("status") and m.status.job_id == job_id for m in self._items)

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def get(self) -> agent_pb2.AgentMessage:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._pop()

    def _pop(self) -> agent_pb2.AgentMessage:
        message = self._items.popleft()
        if not self._items:
            self._empty.set()
        if message.HasField("logs"):
            self._log_batches -= 1
        return message

    def take_reports(self, budget_bytes: int) -> list[agent_pb2.AgentMessage]:
        """The job reports (status, logs) queued at the head, in order, up to
        REPORTS_PER_MESSAGE of them and about `budget_bytes`: what can travel together."""
        taken: list[agent_pb2.AgentMessage] = []
        while self._items and len(taken) < REPORTS_PER_MESSAGE:
            head = self._items[0]
            if head.WhichOneof("kind") not in _REPORT_KINDS:
                break
            budget_bytes -= head.ByteSize()
            if budget_bytes < 0:
                break
            taken.append(self._pop())
        return taken


def as_one_message(messages: list[agent_pb2.AgentMessage]) -> agent_pb2.AgentMessage:
    """Several job reports as one AgentReports message (the coordinator applies them in order)."""
    if len(messages) == 1:
        return messages[0]
    items = []
    for message in messages:
        if message.HasField("status"):
            items.append(agent_pb2.AgentReport(status=message.status))
        else:
            items.append(agent_pb2.AgentReport(logs=message.logs))
    return agent_pb2.AgentMessage(reports=agent_pb2.AgentReports(items=items))


class Connection:
    def __init__(self, *, address: str, secret: str, data_dir: Path,
                 capabilities: agent_pb2.AgentCapabilities, executor: JobExecutor,
                 outbox: Outbox, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        self.secret = secret
        self.data_dir = data_dir
        self.capabilities = capabilities
        self.executor = executor
        self.outbox = outbox
        self.credentials = credentials
        self.identity = Identity.load(data_dir)
        self.heartbeat_s = 5.0
        self.connected = asyncio.Event()
        self.released = asyncio.Event()
        self._resumed = asyncio.Event()  # per stream: ResumeLogs arrived (or timed out)

    def heartbeat(self) -> None:
        """Queue a heartbeat now (also used to report idle the moment a job ends)."""
        self.outbox.put(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(
            running_job_ids=self.executor.running_job_ids(),
            cached_projects=self.executor.cached_projects(),
            cached_env_hashes=self.executor.cached_env_hashes(),
        )))

    async def _register(self, stub: agent_pb2_grpc.AgentGatewayAsyncStub) -> None:
        request = agent_pb2.RegisterAgentRequest(
            capabilities=self.capabilities,
            cached_projects=self.executor.cached_projects(),
            cached_env_hashes=self.executor.cached_env_hashes(),
        )
        if self.identity.credential:
            request.secret, request.agent_id = self.identity.credential, self.identity.agent_id
            try:
                reply = await stub.Register(request, timeout=15)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
                log.warning("stored credential refused (%s); enrolling again", exc.details())
                self.identity = Identity()
        if not self.identity.credential:
            request.secret, request.agent_id = self.secret, ""
            reply = await stub.Register(request, timeout=15)
        self.identity = Identity(reply.agent_id, reply.credential)
        self.identity.save(self.data_dir)
        if reply.heartbeat_interval_ms:
            self.heartbeat_s = reply.heartbeat_interval_ms / 1000
        log.info("registered as %s (%s)", reply.agent_id, self.capabilities.profile)

    async def run(self) -> None:
        """Stay connected until cancelled or released by the coordinator."""
        backoff = BACKOFF_START
        while not self.released.is_set():
            try:
                async with channel(self.address, self.credentials) as ch:
                    stub = agent_pb2_grpc.AgentGatewayStub(ch)
                    await self._register(stub)
                    backoff = BACKOFF_START
                    await self._stream(stub)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("coordinator refused this agent: %s", error)
                else:
                    log.warning("coordinator link lost: %s", error)
            except C3Error as exc:
                log.warning("coordinator link: %s", exc)
            self.connected.clear()
            if self.released.is_set():
                break
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _stream(self, stub: agent_pb2_grpc.AgentGatewayAsyncStub) -> None:
        call = stub.Connect(metadata=bearer(self.identity.credential))
        self._resumed = asyncio.Event()
        self.heartbeat()  # first message: what runs here and what is cached
        writer = asyncio.create_task(self._write(call))
        beats = asyncio.create_task(self._beat())
        self.connected.set()
        try:
            while True:
                message = await call.read()
                if not isinstance(message, agent_pb2.CoordinatorMessage):  # grpc.aio.EOF
                    log.warning("coordinator closed the stream")
                    return
                self._handle(message)
        finally:
            beats.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await writer
            call.cancel()

    def _handle(self, message: agent_pb2.CoordinatorMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "assignment":
            log.info("assignment %s", message.assignment.job.id)
            self.executor.assign(message.assignment)
            self.heartbeat()
        elif kind == "cancel":
            c = message.cancel
            log.info("cancel %s (%s)", c.job_id, c.reason)
            self.executor.cancel(c.job_id, c.state, c.reason)
        elif kind == "release":
            log.info("released by the coordinator")
            self.released.set()
        elif kind == "resume_logs":
            self._resume_logs(message.resume_logs)

    def _resume_logs(self, resume: agent_pb2.ResumeLogs) -> None:
        """Resend what the coordinator lacks, ahead of everything queued; it drops repeats.

        Nothing was written on this stream yet (the writer waits for this), so the
        queued batches of these jobs can be replaced by the kept lines, in order."""
        journal = self.executor.journal
        journal.forget_finished_except(resume.next_index)
        self.outbox.drop_logs(set(resume.next_index))
        resend: list[agent_pb2.AgentMessage] = []
        for job_id, next_index in sorted(resume.next_index.items()):
            lines = journal.resume(job_id, next_index)
            for start in range(0, len(lines), MAX_BATCH_LINES):
                batch = agent_pb2.LogBatch(job_id=job_id, lines=lines[start:start + MAX_BATCH_LINES])
                resend.append(agent_pb2.AgentMessage(logs=batch))
            if lines:
                log.info("job %s: resending %d log lines from %d", job_id, len(lines), next_index)
            # The coordinator still thinks this job runs here: if it ended, the final report
            # may have died with the coordinator; say it again (after its lines).
            final = journal.final_of(job_id)
            if final is not None and not self.outbox.has_status(job_id):
                log.info("job %s: resending its final status", job_id)
                resend.append(agent_pb2.AgentMessage(status=final))
        for message in reversed(resend):
            self.outbox.push_front(message)
        self._resumed.set()

    async def _write(
        self, call: grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.CoordinatorMessage]
    ) -> None:
        # Nothing goes out before ResumeLogs: queued lines must not overtake the resend.
        try:
            await asyncio.wait_for(self._resumed.wait(), RESUME_WAIT_S)
        except TimeoutError:
            log.warning("no ResumeLogs from the coordinator in %.0fs; sending without it",
                        RESUME_WAIT_S)
            self._resumed.set()
        while True:
            message = await self.outbox.get()
            batch = [message]
            if message.WhichOneof("kind") in _REPORT_KINDS:
                # Whatever queued behind it goes in the same message: a job that ends
                # fast reports RUNNING, its last lines and its end in one write.
                batch += self.outbox.take_reports(REPORT_BYTES_PER_MESSAGE - message.ByteSize())
            try:
                await call.write(as_one_message(batch))
            except BaseException:
                for sent in reversed(batch):
                    self.outbox.push_front(sent)  # resent on the next stream
                raise

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s * random.uniform(0.8, 1.2))
            self.heartbeat()
