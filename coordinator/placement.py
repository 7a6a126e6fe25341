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
    if spec.docker_image and not caps.docker:
        return False  # only agents with a working container engine take docker jobs
    if not spec.gpu:
        return True
    if spec.gpu in classes:
        return caps.gpu_class == spec.gpu
    return caps.profile == spec.gpu


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
    if spec.docker_image:
        what += " with a container engine (docker.image)"
    return f"no capacity for {what}"


class IdleIndex:
    """Idle agents indexed by profile, cached project and environment, so placing a job
    looks at a handful of agents instead of scanning every idle one."""

    def __init__(self, classes: frozenset[str]) -> None:
        self._classes = classes
        self.all: dict[str, AgentState] = {}
        self._by_profile: dict[str, dict[str, AgentState]] = {}
        self._by_project: dict[str, dict[str, AgentState]] = {}
        self._by_env: dict[str, dict[str, AgentState]] = {}
        self._class_profiles: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.all)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.all

    def add(self, agent: AgentState) -> None:
        if agent.id in self.all:
            return
        self.all[agent.id] = agent
        self._by_profile.setdefault(agent.caps.profile, {})[agent.id] = agent
        self._class_profiles.setdefault(agent.caps.gpu_class, set()).add(agent.caps.profile)
        for project in agent.cached_projects:
            self._by_project.setdefault(project, {})[agent.id] = agent
        for env_hash in agent.cached_env_hashes:
            self._by_env.setdefault(env_hash, {})[agent.id] = agent

    def discard(self, agent: AgentState) -> None:
        if self.all.pop(agent.id, None) is None:
            return
        for index in (self._by_profile, self._by_project, self._by_env):
            for key in list(index):
                bucket = index[key]
                if bucket.pop(agent.id, None) is not None and not bucket:
                    del index[key]

    def _first_fit(
        self, spec: common_pb2.JobSpec, agents: Iterable[AgentState], prefer: str = ""
    ) -> AgentState | None:
        best: AgentState | None = None
        for agent in agents:
            if fits(spec, agent.caps, self._classes):
                if not prefer or prefer in agent.cached_projects:
                    return agent
                best = best or agent
        return best

    def choose(self, spec: common_pb2.JobSpec, prefer_agent_id: str = "") -> AgentState | None:
        """The best idle agent: the one asked for, one holding the environment, one holding
        the project's blobs, then any that fits."""
        wanted = self.all.get(prefer_agent_id) if prefer_agent_id else None
        if wanted is not None and fits(spec, wanted.caps, self._classes):
            return wanted
        if spec.env_hash and spec.env_hash in self._by_env:
            found = self._first_fit(spec, self._by_env[spec.env_hash].values(), spec.project)
            if found is not None:
                return found
        if spec.project in self._by_project:
            found = self._first_fit(spec, self._by_project[spec.project].values())
            if found is not None:
                return found
        if not spec.gpu:
            profiles: Iterable[str] = list(self._by_profile)
        elif spec.gpu in self._classes:
            profiles = list(self._class_profiles.get(spec.gpu, ()))
        else:
            profiles = [spec.gpu]
        for profile in profiles:
            found = self._first_fit(spec, self._by_profile.get(profile, {}).values())
            if found is not None:
                return found
        return None
