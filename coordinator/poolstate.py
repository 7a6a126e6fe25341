"""The warm pools' state, and what it tells a user whose job waits on them.

Built from the pool config before the scheduler (which asks `message_for` why a job
waits); coordinator/pools.py's PoolManager changes it as agents start, register and leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from c3.v1 import agent_pb2
from coordinator.agents import AgentState
from coordinator.catalog import Catalog
from coordinator.model import Job
from coordinator.placement import fits
from coordinator.poolconfig import PoolConfig, PoolPolicy

BACKOFF_START_S = 1.0


class KnownAgents(Protocol):
    @property
    def states(self) -> Mapping[str, AgentState]: ...


@dataclass(eq=False)
class Starting:
    handle: Any
    launch_id: str  # the agent registers with it (AgentCapabilities.launch_id)
    since: float
    phrase: str  # where the start stands, for users (from the provider)
    timer: asyncio.TimerHandle | None = None  # the registration timeout
    watcher: asyncio.Task[None] | None = None  # the provider's watch_start

    def stop_watching(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()


@dataclass(eq=False)
class Pool:
    policy: PoolPolicy
    caps: agent_pb2.AgentCapabilities
    starting: list[Starting] = field(default_factory=list)
    members: dict[str, Any] = field(default_factory=dict)  # agent id -> handle or None
    in_flight: int = 0  # provision() calls not yet returned
    # launch id -> agent id, for agents that registered before provision() returned.
    registered_early: dict[str, str] = field(default_factory=dict)
    error: str = ""
    backoff: float = BACKOFF_START_S
    retry_at: float = 0.0


class PoolBoard:
    def __init__(self, config: PoolConfig, catalog: Catalog, agents: KnownAgents) -> None:
        self.config = config
        self._provider_names = config.provider_names
        self._classes = catalog.classes
        self._agents = agents
        self.pools: list[Pool] = []
        for policy in config.pools:
            profile = catalog.profile(policy.profile)
            caps = agent_pb2.AgentCapabilities(
                profile=policy.profile,
                gpu_class=profile.gpu_class if profile else "",
                gpu_count=profile.gpu_count if profile else 0,
                provider=policy.provider,
            )
            self.pools.append(Pool(policy, caps))

    def pool_of(self, agent: AgentState) -> Pool | None:
        for pool in self.pools:
            if agent.caps.profile == pool.policy.profile and (
                agent.caps.provider == pool.policy.provider
            ):
                return pool
        return None

    def message_for(self, job: Job) -> str:
        pin = job.spec.provider
        if (
            pin
            and pin not in self._provider_names
            and not any(
                a.connected and a.caps.provider == pin for a in self._agents.states.values()
            )
        ):
            return f"provider {pin} unavailable"
        for pool in self.pools:
            if not fits(job.spec, pool.caps, self._classes):
                continue
            if pool.error:
                return f"provider {pool.policy.provider}: {pool.error}; retrying"
            if pool.starting:
                return (
                    f"provisioning a {pool.policy.profile} agent through "
                    f"{pool.policy.provider} ({pool.starting[0].phrase})"
                )
            if pool.in_flight:
                return f"provisioning a {pool.policy.profile} agent through {pool.policy.provider}"
        return ""
