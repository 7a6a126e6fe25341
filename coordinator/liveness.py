"""Agent liveness: an agent silent for `loss_after_s` is lost.

One TimerHandle per agent, armed when it is first heard from. Every message only notes
the time (the gateway calls `touch` for each); the timer re-arms itself for the rest when
it fires early, so a busy stream costs no timer churn. What a loss means for the agent's
jobs is the scheduler's business (`on_lost`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from coordinator.agents import AgentState

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, loss_after_s: float, on_lost: Callable[[AgentState, str], None]) -> None:
        self._loss_after = loss_after_s
        self._on_lost = on_lost
        self._watched: dict[str, AgentState] = {}

    def touch(self, agent: AgentState) -> None:
        """The agent was heard from."""
        loop = asyncio.get_running_loop()
        agent.heard_at = loop.time()
        agent.last_seen = time.time()
        if agent.loss_timer is None:
            self._watched[agent.id] = agent
            agent.loss_timer = loop.call_at(agent.heard_at + self._loss_after, self._due, agent)

    def watch(self, agents: Iterable[AgentState]) -> None:
        """After a restart: agents that hold jobs are lost unless they come back in time."""
        for agent in agents:
            self.touch(agent)

    def _due(self, agent: AgentState) -> None:
        loop = asyncio.get_running_loop()
        silent_until = agent.heard_at + self._loss_after
        if silent_until > loop.time():
            agent.loss_timer = loop.call_at(silent_until, self._due, agent)
            return
        log.warning("agent %s silent for %.1fs: lost", agent.id, self._loss_after)
        self.lost(agent, f"agent {agent.id} lost")

    def lost(self, agent: AgentState, why: str) -> None:
        """The agent is gone for good (silent too long, or revoked by an operator)."""
        self._forget(agent)
        self._on_lost(agent, why)

    def _forget(self, agent: AgentState) -> None:
        if agent.loss_timer is not None:
            agent.loss_timer.cancel()
        agent.loss_timer = None
        self._watched.pop(agent.id, None)

    def stop(self) -> None:
        for agent in list(self._watched.values()):
            self._forget(agent)
