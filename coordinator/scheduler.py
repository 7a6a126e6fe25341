"""Push dispatch: a pending queue, the idle agents, and the agents' liveness.

Work moves the instant something changes: a submitted job looks for an idle agent, a
freed agent takes the first pending job it fits, and an assignment goes straight into
the agent's stream. Nothing here waits on a timer except loss detection, which is one
TimerHandle per agent, pushed back on every message the agent sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from c3.tokens import READ, WRITE, TokenClaims, TokenSigner
from c3.v1 import agent_pb2
from coordinator.agents import AgentRegistry, AgentState
from coordinator.convert import job_to_proto
from coordinator.events import timestamp
from coordinator.jobs import JobService
from coordinator.lifecycle import ON_AGENT, Reason, State
from coordinator.model import Job, Startup
from coordinator.placement import choose, fits, waiting_reason

log = logging.getLogger(__name__)

# A job token outlives its time limit by this much (upload of artifacts happens after).
_TOKEN_GRACE_S = 3600.0
_TOKEN_NO_LIMIT_S = 7 * 24 * 3600.0


class Scheduler:
    def __init__(
        self,
        jobs: JobService,
        agents: AgentRegistry,
        classes: frozenset[str],
        signer: TokenSigner,
        storage_address: str,
        loss_after_s: float,
    ) -> None:
        self._jobs = jobs
        self._agents = agents
        self._classes = classes
        self._signer = signer
        self._storage_address = storage_address
        self._loss_after = loss_after_s
        self._pending: OrderedDict[str, Job] = OrderedDict()
        self._idle: dict[str, AgentState] = {}

    # -- restart -------------------------------------------------------------------------
    def restore(self, jobs: list[Job]) -> None:
        """After a restart: pending jobs queue again; jobs on agents wait for them to return."""
        for job in jobs:
            if job.state == State.PENDING:
                self._pending[job.id] = job
            elif job.state in ON_AGENT:
                agent = self._agents.states.get(job.agent_id)
                if agent is None:
                    self._agent_gone(job, "its agent is unknown after a coordinator restart")
                    continue
                agent.running.add(job.id)
                self.touch(agent)

    # -- jobs ----------------------------------------------------------------------------
    def enqueue(self, job: Job, front: bool = False) -> None:
        agent = choose(job.spec, job.prefer_agent_id, self._idle.values(), self._classes)
        if agent is not None:
            self._assign(job, agent)
            return
        self._pending[job.id] = job
        if front:
            self._pending.move_to_end(job.id, last=False)
        connected = (a.caps for a in self._agents.states.values() if a.connected)
        job.message = waiting_reason(job.spec, connected, self._classes)
        self._jobs.save(job)

    def forget(self, job: Job) -> None:
        self._pending.pop(job.id, None)

    def pending_count(self) -> int:
        return len(self._pending)

    def idle_agents(self) -> list[AgentState]:
        return list(self._idle.values())

    def _assign(self, job: Job, agent: AgentState) -> None:
        self._pending.pop(job.id, None)
        agent.running.add(job.id)
        if not agent.free:
            self._idle.pop(agent.id, None)
        now = time.time()
        job.agent_id = agent.id
        job.gpu_profile = agent.caps.profile
        job.provider = agent.caps.provider
        job.region = agent.caps.region
        job.assigned_at = now
        job.startup = Startup(
            allocation_ms=(now - job.created_at) * 1000,
            # Warm: the agent was connected and waiting before the job existed.
            warm_pool_hit=agent.connected_at <= job.created_at,
        )
        self._jobs.transition(job, State.SCHEDULING, f"assigned to agent {agent.id}", message="")
        assignment = agent_pb2.Assignment(
            job=job_to_proto(job),
            storage_token=self._job_token(job, now),
            storage_address=self._storage_address,
            assigned_at=timestamp(now),
        )
        agent.send(agent_pb2.CoordinatorMessage(assignment=assignment))

    def _job_token(self, job: Job, now: float) -> str:
        limit = job.spec.time_limit_seconds
        ttl = limit + _TOKEN_GRACE_S if limit else _TOKEN_NO_LIMIT_S
        manifests = [job.spec.workspace_manifest_digest]
        manifests += [m.manifest_digest for m in job.spec.datasets if m.manifest_digest]
        read_paths = [f"/jobs/{job.id}/"]
        read_paths += [m.resolved_path for m in job.spec.datasets if m.resolved_path]
        claims = TokenClaims(
            org_id=job.org_id,
            operations=(READ, WRITE),
            read_prefixes=tuple(read_paths),
            write_prefixes=(f"/jobs/{job.id}/",),
            expires_at=now + ttl,
            subject=f"job:{job.id}",
            read_manifests=tuple(manifests),
        )
        return self._signer.sign(claims)

    def push_cancel(self, job: Job, state: State, reason: str) -> None:
        agent = self._agents.states.get(job.agent_id)
        cancel = agent_pb2.CancelAssignment(job_id=job.id, state=int(state), reason=reason)  # type: ignore[arg-type]
        if agent is None or not agent.send(agent_pb2.CoordinatorMessage(cancel=cancel)):
            log.info(
                "cancel of %s waits for agent %s to reconnect or be lost", job.id, job.agent_id
            )

    def job_left_agent(self, job: Job, agent_id: str) -> None:
        agent = self._agents.states.get(agent_id)
        if agent is None:
            return
        agent.running.discard(job.id)
        if agent.free:
            self._agent_free(agent)

    # -- agents --------------------------------------------------------------------------
    def _agent_free(self, agent: AgentState) -> None:
        while agent.free:
            job = next(
                (j for j in self._pending.values() if fits(j.spec, agent.caps, self._classes)),
                None,
            )
            if job is None:
                break
            self._assign(job, agent)
        if agent.free:
            self._idle[agent.id] = agent

    def connected(
        self, agent: AgentState, outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None]
    ) -> None:
        if agent.outbox is not None:
            agent.outbox.put_nowait(None)  # a second stream replaces the first
        agent.outbox = outbox
        agent.connected_at = time.time()
        self.touch(agent)
        if agent.free:
            self._agent_free(agent)

    def disconnected(
        self, agent: AgentState, outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None]
    ) -> None:
        """The stream ended. The agent is not lost until it stays silent long enough."""
        if agent.outbox is not outbox:
            return
        agent.outbox = None
        self._idle.pop(agent.id, None)

    def touch(self, agent: AgentState) -> None:
        if agent.loss_timer is not None:
            agent.loss_timer.cancel()
        loop = asyncio.get_running_loop()
        agent.loss_timer = loop.call_later(self._loss_after, self._lost, agent)

    def _lost(self, agent: AgentState) -> None:
        agent.loss_timer = None
        log.warning("agent %s silent for %.1fs: lost", agent.id, self._loss_after)
        if agent.outbox is not None:
            outbox = agent.outbox
            self.disconnected(agent, outbox)
            outbox.put_nowait(None)
        for job_id in sorted(agent.running):
            agent.running.discard(job_id)
            job = self._jobs.jobs.get(job_id)
            if job is not None and job.state in ON_AGENT:
                self._agent_gone(job, f"agent {agent.id} lost")

    def _agent_gone(self, job: Job, why: str) -> None:
        if job.cancel_requested:
            self._jobs.transition(job, State.CANCELED, why, message="canceled (" + why + ")")
        elif job.state == State.RUNNING:
            self._jobs.transition(
                job, State.FAILED, why, reason=Reason.AGENT_LOST, message=why + " while running"
            )
        else:
            self._jobs.transition(job, State.PENDING, why + " before the script started; requeued")
            job.agent_id = job.gpu_profile = job.provider = job.region = ""
            self.enqueue(job, front=True)

    def stop(self) -> None:
        for agent in self._agents.states.values():
            if agent.loss_timer is not None:
                agent.loss_timer.cancel()
            if agent.outbox is not None:
                agent.outbox.put_nowait(None)

    def known_agents(self) -> list[AgentState]:
        return list(self._agents.states.values())
