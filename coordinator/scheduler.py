"""Push dispatch: a fair pending queue and the idle agents.

Work moves the instant something changes: a submitted job looks for an idle agent, a
freed agent takes the next pending job it fits (orgs served in turn), and an assignment
goes straight into the agent's stream. Timers, not polling, handle time limits and
supersede holds (agent liveness is coordinator/liveness.py). The scheduler learns of job
changes from the job topic: each one keeps the agents' slots, the orgs' concurrency counts
and the time-limit timers in step at once, while the placements that follow (a freed agent
taking the next job, a new job looking for an agent) run just after, on the next loop
turn, so no transition is ever made while another is being delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from c3.v1 import agent_pb2
from coordinator.agents import AgentState
from coordinator.changes import AgentChange, AgentEvent, CancelRequested, JobChange, Topic
from coordinator.convert import job_to_proto
from coordinator.events import timestamp
from coordinator.fairqueue import FairQueue
from coordinator.lifecycle import FINISHED, ON_AGENT, Reason, State
from coordinator.model import Job, Startup
from coordinator.placement import IdleIndex, fits, waiting_reason
from coordinator.timelimits import TimeLimits

log = logging.getLogger(__name__)

# A job assigned during the current stream is only declared gone after it is missing
# from two heartbeats and at least this old (a heartbeat may cross the assignment).
_RECONCILE_MIN_AGE_S = 1.0


class Jobs(Protocol):
    """What the scheduler needs of the job service."""

    @property
    def jobs(self) -> Mapping[str, Job]: ...

    def transition(
        self,
        job: Job,
        target: State,
        note: str = "",
        *,
        reason: Reason | None = None,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> asyncio.Future[None]: ...

    def save(self, job: Job) -> asyncio.Future[None]: ...


class Agents(Protocol):
    """The agents the coordinator knows (coordinator/agents.py's registry)."""

    @property
    def states(self) -> Mapping[str, AgentState]: ...

    @property
    def gpu_names(self) -> set[str]: ...

    @property
    def providers(self) -> set[str]: ...


class JobGrants(Protocol):
    """Where a job's agent reaches storage, and the token it does so with."""

    @property
    def storage_address(self) -> str: ...

    def for_job(self, job: Job, now: float) -> str: ...


class WaitReasons(Protocol):
    """Why a pending job waits, when something besides the agents knows (warm pools)."""

    def message_for(self, job: Job) -> str: ...


class Scheduler:
    def __init__(
        self,
        jobs: Jobs,
        job_changes: Topic[JobChange],
        agents: Agents,
        agent_changes: Topic[AgentChange],
        classes: frozenset[str],
        grants: JobGrants,
        limit_of: Callable[[str], tuple[int, str]] = lambda org_id: (0, ""),
        time_limit_grace_s: float = 30.0,
        supersede_hold_s: float = 2.0,
        waits: WaitReasons | None = None,
    ) -> None:
        self._jobs = jobs
        self._agents = agents
        self._agent_changes = agent_changes
        self._classes = classes
        self._grants = grants
        self._waits = waits
        self._hold_s = supersede_hold_s
        self._pending = FairQueue(limit_of)
        self._idle = IdleIndex(classes)
        self._held: dict[str, list[Job]] = {}
        self._limits = TimeLimits(time_limit_grace_s, self.push_cancel, self._force_timeout)
        # Placements that follow a change, run on the next loop turn in the order queued.
        self._follow_ups: deque[Callable[[], None]] = deque()
        self._settle_later: asyncio.Handle | None = None
        job_changes.subscribe(self._on_change)

    # -- restart -------------------------------------------------------------------------
    def restore(self, jobs: list[Job]) -> list[AgentState]:
        """After a restart: pending jobs queue again; jobs on agents wait for them to return.
        Returns the agents that hold jobs (they are lost unless they come back in time)."""
        holding: dict[str, AgentState] = {}
        for job in jobs:
            if job.state == State.PENDING:
                self._pending.add(job)
            elif job.state in ON_AGENT:
                agent = self._agents.states.get(job.agent_id)
                if agent is None:
                    self._agent_gone(job, "its agent is unknown after a coordinator restart")
                    continue
                self._pending.started(job.org_id)
                agent.running.add(job.id)
                if job.state == State.RUNNING:
                    self._limits.started(job)
                holding[agent.id] = agent
        return list(holding.values())

    # -- job changes ---------------------------------------------------------------------
    def _on_change(self, change: JobChange) -> None:
        """Every job change, as it happens: bookkeeping now, placements just after."""
        if isinstance(change, CancelRequested):
            self.push_cancel(change.job, change.state, change.reason)
            return
        job, old, new = change.job, change.previous, change.target
        if old is None:
            self._follow_up(lambda: self._place_new(job))
            return
        if old == State.PENDING and new in FINISHED:
            self.forget(job)
        if new in ON_AGENT and old not in ON_AGENT:
            self._pending.started(job.org_id)
        if new == State.RUNNING:
            self._limits.started(job)
        if old in ON_AGENT and new not in ON_AGENT:
            self._limits.stopped(job)
            off_limit = self._pending.stopped(job.org_id)
            agent = self._agents.states.get(change.agent_id)
            if agent is not None:
                agent.running.discard(job.id)
                agent.missing.discard(job.id)
                if agent.free:
                    freed = agent
                    self._follow_up(lambda: self._agent_free(freed) if freed.free else None)
            if off_limit:
                org_id = job.org_id
                self._follow_up(lambda: self._dispatch_org(org_id))

    def _follow_up(self, work: Callable[[], None]) -> None:
        self._follow_ups.append(work)
        if self._settle_later is None:
            self._settle_later = asyncio.get_running_loop().call_soon(self.settle)

    def settle(self) -> None:
        """Make the placements that follow the changes so far. Runs on the next loop turn
        by itself; a caller that just applied changes outside any transition (the gateway,
        after each agent message) calls it at once, so a freed agent gets its next job
        without waiting for the rest of the loop's ready work."""
        if self._settle_later is not None:
            self._settle_later.cancel()  # a no-op when it is what runs this
            self._settle_later = None
        while self._follow_ups:
            work = self._follow_ups.popleft()
            try:
                work()
            except Exception:  # a bug in one placement must not strand the ones after it
                log.exception("placement after a job change failed")

    def _place_new(self, job: Job) -> None:
        if job.state == State.PENDING:  # not canceled meanwhile
            self.enqueue(job)

    # -- jobs ----------------------------------------------------------------------------
    def enqueue(self, job: Job, front: bool = False) -> None:
        if job.hold_agent_id and self._hold(job):
            return
        if not self._pending.at_limit(job.org_id):
            agent = self._idle.choose(job.spec, job.prefer_agent_id)
            if agent is not None:
                self._assign(job, agent)
                return
        self._pending.add(job, front)
        self._set_message(job)
        self._tell("waiting")

    def _hold(self, job: Job) -> bool:
        """Keep a superseding job for the agent of the job it replaces; False: don't wait."""
        agent = self._agents.states.get(job.hold_agent_id)
        if agent is None or not agent.connected or not fits(job.spec, agent.caps, self._classes):
            job.hold_agent_id = ""
            return False
        if agent.id in self._idle and not self._pending.at_limit(job.org_id):
            job.hold_agent_id = ""
            self._assign(job, agent)
            return True
        self._pending.add(job)
        self._held.setdefault(agent.id, []).append(job)
        asyncio.get_running_loop().call_later(self._hold_s, self._hold_expired, job)
        self._set_message(job)
        return True

    def _hold_expired(self, job: Job) -> None:
        if not job.hold_agent_id:
            return
        self._unhold(job)
        if job.state == State.PENDING and self._pending.remove(job):
            self.enqueue(job, front=True)

    def _unhold(self, job: Job) -> None:
        held = self._held.get(job.hold_agent_id, [])
        if job in held:
            held.remove(job)
        if not held:
            self._held.pop(job.hold_agent_id, None)
        job.hold_agent_id = ""

    def forget(self, job: Job) -> None:
        if job.hold_agent_id:
            self._unhold(job)
        self._pending.remove(job)

    def pending_jobs(self) -> Iterable[Job]:
        return self._pending.jobs()

    def idle_agents(self) -> list[AgentState]:
        return list(self._idle.all.values())

    def _assign(self, job: Job, agent: AgentState) -> None:
        self._pending.remove(job)
        agent.running.add(job.id)
        if not agent.free:
            self._idle.discard(agent)
        now = time.time()
        job.agent_id = agent.id
        job.gpu_profile = agent.caps.profile
        job.provider = agent.caps.provider
        job.region = agent.caps.region
        job.pool = agent.pool
        job.assigned_at = now
        job.startup = Startup(
            allocation_ms=(now - job.created_at) * 1000,
            # Warm: the agent was connected and waiting before the job existed.
            warm_pool_hit=agent.connected_at <= job.created_at,
        )
        self._jobs.transition(job, State.SCHEDULING, f"assigned to agent {agent.id}", message="")
        assignment = agent_pb2.Assignment(
            job=job_to_proto(job),
            storage_token=self._grants.for_job(job, now),
            storage_address=self._grants.storage_address,
            assigned_at=timestamp(now),
        )
        agent.send(agent_pb2.CoordinatorMessage(assignment=assignment))

    def push_cancel(self, job: Job, state: State, reason: str) -> None:
        agent = self._agents.states.get(job.agent_id)
        cancel = agent_pb2.CancelAssignment(job_id=job.id, state=int(state), reason=reason)  # type: ignore[arg-type]
        if agent is None or not agent.send(agent_pb2.CoordinatorMessage(cancel=cancel)):
            log.info(
                "cancel of %s waits for agent %s to reconnect or be lost", job.id, job.agent_id
            )

    def _force_timeout(self, job: Job, why: str) -> None:
        self._jobs.transition(job, State.TIMED_OUT, why, message=why)

    def _dispatch_org(self, org_id: str) -> None:
        """The org may run more: place its pending jobs on idle agents, in order."""
        for job in self._pending.org_jobs(org_id):
            if self._pending.at_limit(org_id):
                break
            if job.hold_agent_id:
                continue
            agent = self._idle.choose(job.spec, job.prefer_agent_id)
            if agent is not None:
                self._assign(job, agent)
        self._refresh(self._pending.org_jobs(org_id))

    # -- pending messages ----------------------------------------------------------------
    def _set_message(self, job: Job) -> None:
        if job.hold_agent_id:
            message = f"waiting for agent {job.hold_agent_id} to stop the job this one replaces"
        elif self._pending.at_limit(job.org_id):
            message = self._pending.limit_message(job.org_id)
        else:
            message = self._waits.message_for(job) if self._waits is not None else ""
            pin = job.spec.provider
            if not message and pin and self._waits is None and not any(
                a.connected and a.caps.provider == pin for a in self._agents.states.values()
            ):
                message = f"provider {pin} unavailable (no agents and no pool for it)"
            if not message:
                connected = (a.caps for a in self._agents.states.values() if a.connected)
                message = waiting_reason(job.spec, connected, self._classes)
        if message != job.message:
            job.message = message
            self._jobs.save(job)

    def _refresh(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            if job.state == State.PENDING:
                self._set_message(job)

    def refresh_pending(self) -> None:
        """Re-state why each pending job waits (agents came or went, a provider failed)."""
        self._refresh(self._pending.jobs())

    def _tell(self, kind: AgentEvent, agent: AgentState | None = None) -> None:
        if self._agent_changes.heard:  # no warm pool: nobody listens
            self._agent_changes.publish(AgentChange(kind, agent))

    # -- agents --------------------------------------------------------------------------
    def _agent_free(self, agent: AgentState) -> None:
        while agent.free:
            job = self._next_held(agent) or self._pending.take_for(
                lambda j: not j.hold_agent_id and fits(j.spec, agent.caps, self._classes)
            )
            if job is None:
                break
            self._assign(job, agent)
        if agent.free:
            agent.idle_since = time.monotonic()
            self._idle.add(agent)
            self._tell("idle", agent)

    def _next_held(self, agent: AgentState) -> Job | None:
        for job in list(self._held.get(agent.id, ())):
            if job.state != State.PENDING:
                self._unhold(job)
            elif not self._pending.at_limit(job.org_id):
                self._unhold(job)
                return job
        return None

    def connected(
        self, agent: AgentState, outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None]
    ) -> None:
        if agent.outbox is not None:
            agent.outbox.put_nowait(None)  # a second stream replaces the first
        agent.outbox = outbox
        agent.connected_at = time.time()
        agent.missing.clear()
        self._tell("connected", agent)  # a warm pool claims it before it takes a job
        if agent.free:
            self._agent_free(agent)
        self.refresh_pending()

    def disconnected(
        self, agent: AgentState, outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None]
    ) -> None:
        """The stream ended. The agent is not lost until it stays silent long enough."""
        if agent.outbox is not outbox:
            return
        agent.outbox = None
        self._idle.discard(agent)
        self._tell("disconnected", agent)
        self.refresh_pending()

    def release(self, agent: AgentState) -> None:
        """Ask an idle agent to leave (warm pool shrinking); it exits after its job."""
        agent.releasing = True
        self._idle.discard(agent)
        agent.send(agent_pb2.CoordinatorMessage(release=True))

    def caches_changed(self, agent: AgentState) -> None:
        if agent.id in self._idle:  # re-index under its new projects and environments
            self._idle.discard(agent)
            self._idle.add(agent)

    def reconcile(self, agent: AgentState, running_job_ids: Iterable[str]) -> None:
        """Match a heartbeat's running jobs against what the coordinator believes."""
        listed = set(running_job_ids)
        now = time.time()
        still_missing: set[str] = set()
        for job_id in sorted(agent.running - listed):
            job = self._jobs.jobs.get(job_id)
            if job is None or job.state not in ON_AGENT:
                agent.running.discard(job_id)
                continue
            settled = job.assigned_at < agent.connected_at
            twice = job_id in agent.missing and now - job.assigned_at > _RECONCILE_MIN_AGE_S
            if settled or twice:
                self._agent_gone(job, f"agent {agent.id} no longer runs it")
            else:
                still_missing.add(job_id)
        agent.missing = still_missing
        for job_id in sorted(listed - agent.running):
            job = self._jobs.jobs.get(job_id)
            if job is not None and job.agent_id == agent.id and job.state in ON_AGENT:
                agent.running.add(job_id)  # ours after all (e.g. restored late)
                continue
            why = "the coordinator has no running job of that id on this agent"
            if job is not None and job.state in FINISHED:
                why = f"job is already {job.state.name} at the coordinator"
            cancel = agent_pb2.CancelAssignment(
                job_id=job_id, state=int(State.CANCELED), reason=why  # type: ignore[arg-type]
            )
            agent.send(agent_pb2.CoordinatorMessage(cancel=cancel))

    def lost(self, agent: AgentState, why: str) -> None:
        """The agent is gone for good (silent too long, or revoked; coordinator/liveness.py
        calls this): its jobs follow the agent-loss rules now (requeued if their script had
        not started, else AGENT_LOST)."""
        if agent.outbox is not None:
            outbox = agent.outbox
            self.disconnected(agent, outbox)
            outbox.put_nowait(None)
        for job_id in sorted(agent.running):
            job = self._jobs.jobs.get(job_id)
            if job is not None and job.state in ON_AGENT:
                self._agent_gone(job, why)
            agent.running.discard(job_id)
        self._tell("lost", agent)

    def _agent_gone(self, job: Job, why: str) -> None:
        if job.cancel_requested:
            self._jobs.transition(job, State.CANCELED, why, message="canceled (" + why + ")")
        elif job.state == State.RUNNING:
            self._jobs.transition(
                job, State.FAILED, why, reason=Reason.AGENT_LOST, message=why + " while running"
            )
        else:
            self._jobs.transition(job, State.PENDING, why + " before the script started; requeued")
            job.agent_id = job.gpu_profile = job.provider = job.region = job.pool = ""
            self.enqueue(job, front=True)

    def stop(self) -> None:
        self._limits.close()
        self._follow_ups.clear()

    def close_streams(self) -> None:
        """End every agent's stream (on shutdown, so the server need not wait for them)."""
        for agent in self._agents.states.values():
            if agent.outbox is not None:
                agent.outbox.put_nowait(None)

    def agent_gpu_names(self) -> set[str]:
        return self._agents.gpu_names

    def agent_providers(self) -> set[str]:
        return self._agents.providers

    def known_agents(self) -> list[AgentState]:
        return list(self._agents.states.values())
