"""What the coordinator's parts tell each other: job and agent changes, published on topics.

`JobService` publishes every job transition (and every cancel it asks an agent for) on a
`Topic[JobChange]`; the scheduler, billing and the storage holds subscribe. The scheduler
publishes what happens to agents on a `Topic[AgentChange]`; the warm pools subscribe.
A part gets the topics it publishes or reads through its constructor, so nobody is wired
to anybody after construction and no module imports the modules that listen to it.

Delivery is synchronous and in subscription order, so a subscriber's writes (a charge, a
pending release) go into the same commit as the transition that caused them. A subscriber
must not publish on the topic it is being told about: a transition made while the last one
is still being delivered would reach some subscribers before the one that caused it. Work
that follows from a change (placing the next job on a freed agent) is scheduled for after
it (`loop.call_soon`); `Topic.publish` refuses the other way with RuntimeError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from coordinator.agents import AgentState
from coordinator.lifecycle import State
from coordinator.model import Job

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class JobChanged:
    """`job` is now `target` (it may have moved on by the time a subscriber looks again)."""

    job: Job
    previous: State | None  # None: the job was just created (PENDING)
    target: State
    agent_id: str  # the job's agent as it changed (a requeue clears job.agent_id after)


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Stop `job` on its agent; it becomes `state` once the agent reports it stopped."""

    job: Job
    state: State
    reason: str


JobChange = JobChanged | CancelRequested

AgentEvent = Literal["connected", "disconnected", "lost", "idle", "waiting"]


@dataclass(frozen=True, slots=True)
class AgentChange:
    """`connected`/`disconnected`/`lost`: the agent's stream; `idle`: it has a free slot
    and nothing to run; `waiting`: a job queued with no agent for it (agent is None)."""

    kind: AgentEvent
    agent: AgentState | None = None


class Topic(Generic[E]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._subscribers: list[Callable[[E], None]] = []
        self._delivering = False

    def subscribe(self, subscriber: Callable[[E], None]) -> None:
        self._subscribers.append(subscriber)

    @property
    def delivering(self) -> bool:
        return self._delivering

    @property
    def heard(self) -> bool:
        """Whether anyone subscribed (a publisher may skip building an event nobody hears)."""
        return bool(self._subscribers)

    def publish(self, event: E) -> None:
        if self._delivering:
            raise RuntimeError(
                f"{self._name}: published from inside one of its own subscribers; "
                "schedule the follow-up (loop.call_soon) instead"
            )
        self._delivering = True
        try:
            for subscriber in self._subscribers:
                subscriber(event)
        finally:
            self._delivering = False
