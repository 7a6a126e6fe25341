"""Which agent may run a job, which one is best, and why nothing fits (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable

from c3.v1 import agent_pb2, common_pb2
from coordinator.agents import AgentState


def fits(
    spec: common_pb2.JobSpec, caps: agent_pb2.AgentCapabilities, classes: frozenset[str]
) -> bool:
    if spec.provider and spec.provider != caps.provider:
        return False
    if not spec.gpu:
        return True
    if spec.gpu in classes:
        return caps.gpu_class == spec.gpu
    return caps.profile == spec.gpu


def preference(spec: common_pb2.JobSpec, prefer_agent_id: str, agent: AgentState) -> int:
    """Higher is better: the agent asked for, then one holding the environment, the blobs."""
    score = 0
    if prefer_agent_id and agent.id == prefer_agent_id:
        score += 4
    if spec.env_hash and spec.env_hash in agent.cached_env_hashes:
        score += 2
    if spec.project in agent.cached_projects:
        score += 1
    return score


def best_preference(spec: common_pb2.JobSpec, prefer_agent_id: str) -> int:
    return (4 if prefer_agent_id else 0) + (2 if spec.env_hash else 0) + 1


def choose(
    spec: common_pb2.JobSpec,
    prefer_agent_id: str,
    idle: Iterable[AgentState],
    classes: frozenset[str],
) -> AgentState | None:
    """The best idle agent for the job; stops at the first one that cannot be beaten."""
    ceiling = best_preference(spec, prefer_agent_id)
    best: AgentState | None = None
    best_score = -1
    for agent in idle:
        if not fits(spec, agent.caps, classes):
            continue
        score = preference(spec, prefer_agent_id, agent)
        if score > best_score:
            best, best_score = agent, score
            if score >= ceiling:
                break
    return best


def waiting_reason(
    spec: common_pb2.JobSpec,
    connected: Iterable[agent_pb2.AgentCapabilities],
    classes: frozenset[str],
) -> str:
    """What a user reads in squeue while the job is PENDING."""
    if any(fits(spec, caps, classes) for caps in connected):
        return "waiting for a free agent (all matching agents are busy)"
    if spec.gpu and spec.gpu in classes:
        what = f"gpu class {spec.gpu}"
    elif spec.gpu:
        what = f"gpu profile {spec.gpu}"
    else:
        what = "any gpu"
    if spec.provider:
        what += f" with provider {spec.provider}"
    return f"no capacity for {what}"
