"""AgentGateway gRPC service: enrolment and each agent's one bidirectional stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from c3.errors import C3Error
from c3.grpctypes import Context
from c3.v1 import agent_pb2, agent_pb2_grpc
from coordinator.agents import AgentRegistry, AgentState
from coordinator.auth import agent as calling_agent
from coordinator.jobs import JobService
from coordinator.liveness import Liveness
from coordinator.scheduler import Scheduler

log = logging.getLogger(__name__)


class AgentGatewayServicer(agent_pb2_grpc.AgentGatewayServicer):
    def __init__(
        self,
        agents: AgentRegistry,
        jobs: JobService,
        scheduler: Scheduler,
        liveness: Liveness,
        heartbeat_ms: int,
    ) -> None:
        self._agents = agents
        self._jobs = jobs
        self._scheduler = scheduler
        self._liveness = liveness
        self._heartbeat_ms = heartbeat_ms

    async def Register(
        self, request: agent_pb2.RegisterAgentRequest, context: Context
    ) -> agent_pb2.RegisterAgentResponse:
        agent, credential = await self._agents.register(request)
        log.info("agent %s registered (%s, %s)", agent.id, agent.caps.profile, agent.caps.provider)
        return agent_pb2.RegisterAgentResponse(
            agent_id=agent.id, credential=credential, heartbeat_interval_ms=self._heartbeat_ms
        )

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        agent = calling_agent()
        outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None] = asyncio.Queue()
        on_agent = sorted(agent.running)  # before `connected` may assign a new job
        self._liveness.touch(agent)
        self._scheduler.connected(agent, outbox)
        reader = asyncio.create_task(self._read(agent, request_iterator, outbox))
        try:
            # Always first, even when empty: the agent holds its log lines until it knows
            # where to resume, so nothing the coordinator lost in a crash stays lost.
            resume = await self._jobs.resume_logs(on_agent)
            yield agent_pb2.CoordinatorMessage(resume_logs=resume)
            while True:
                message = await outbox.get()
                if message is None:
                    return
                yield message
        finally:
            reader.cancel()
            self._scheduler.disconnected(agent, outbox)

    async def _read(
        self,
        agent: AgentState,
        messages: AsyncIterator[agent_pb2.AgentMessage],
        outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None],
    ) -> None:
        try:
            async for message in messages:
                if agent.outbox is not outbox:
                    return  # replaced by a newer stream of the same agent
                self._liveness.touch(agent)
                try:
                    self._handle(agent, message)
                except C3Error as exc:
                    # One bad report must not end the stream or touch another job.
                    log.warning("agent %s: %s", agent.id, exc)
                self._scheduler.settle()  # what the reports freed is placed now
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the agent's side of the stream broke: close ours too
            log.info("agent %s stream ended: %s", agent.id, exc)
        finally:
            outbox.put_nowait(None)

    def _handle(self, agent: AgentState, message: agent_pb2.AgentMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "heartbeat":
            hb = message.heartbeat
            if not agent.cached_projects.issuperset(hb.cached_projects) or (
                not agent.cached_env_hashes.issuperset(hb.cached_env_hashes)
            ):
                agent.cached_projects.update(hb.cached_projects)
                agent.cached_env_hashes.update(hb.cached_env_hashes)
                self._scheduler.caches_changed(agent)
            self._scheduler.reconcile(agent, hb.running_job_ids)
        elif kind == "reports":
            for item in message.reports.items:
                try:
                    self._report(agent, item.WhichOneof("kind"), item)
                except C3Error as exc:
                    # As for single messages: one bad report leaves the rest applied.
                    log.warning("agent %s: %s", agent.id, exc)
        else:
            self._report(agent, kind, message)

    def _report(
        self,
        agent: AgentState,
        kind: str | None,
        carrier: agent_pb2.AgentMessage | agent_pb2.AgentReport,
    ) -> None:
        """A status or log report, sent alone or inside AgentReports (same field names)."""
        if kind == "status":
            self._jobs.apply_update(agent.id, carrier.status)
        elif kind == "logs":
            self._jobs.append_logs(agent.id, carrier.logs)
        else:
            log.warning("agent %s sent an empty message", agent.id)
