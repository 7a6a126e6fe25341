"""Agent identities (enrolment, credentials) and their live connection state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from c3.errors import NotFound, Unauthenticated
from c3.v1 import agent_pb2
from coordinator.accounts import Accounts
from coordinator.model import AgentRecord
from coordinator.repository import Repository
from coordinator.secrets_util import matches, new_id, new_secret, salted_hash, split_credential

AGENT_CREDENTIAL_PREFIX = "c3_agent_"


@dataclass(eq=False)
class AgentState:
    """One agent as the scheduler sees it; survives reconnects of its stream."""

    id: str
    caps: agent_pb2.AgentCapabilities
    cached_projects: set[str] = field(default_factory=set)
    cached_env_hashes: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    # The open stream's outbox; None while the agent is not connected. None in the
    # queue closes the stream.
    outbox: asyncio.Queue[agent_pb2.CoordinatorMessage | None] | None = None
    connected_at: float = 0.0
    # Wall-clock time this process last heard from the agent; 0: not since it started.
    last_seen: float = 0.0
    # The same moment on the event loop's clock (what the loss timer counts from).
    heard_at: float = 0.0
    loss_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    # Jobs the coordinator places here that the agent's last heartbeat did not list.
    missing: set[str] = field(default_factory=set)
    # The warm pool (profile) this agent belongs to, and whether it was asked to leave.
    pool: str = ""
    releasing: bool = False
    idle_since: float = 0.0

    @property
    def capacity(self) -> int:
        return max(1, self.caps.capacity)

    @property
    def connected(self) -> bool:
        return self.outbox is not None

    @property
    def free(self) -> bool:
        return self.connected and not self.releasing and len(self.running) < self.capacity

    def send(self, message: agent_pb2.CoordinatorMessage) -> bool:
        if self.outbox is None:
            return False
        self.outbox.put_nowait(message)
        return True


Classify = Callable[[agent_pb2.AgentCapabilities], agent_pb2.AgentCapabilities]


class AgentRegistry:
    def __init__(self, repo: Repository, accounts: Accounts, classify: Classify) -> None:
        self._repo = repo
        self._accounts = accounts
        # What the agent reports -> the same with its profile decided (Catalog.classify).
        self._classify = classify
        self._records: dict[str, AgentRecord] = {}
        self.states: dict[str, AgentState] = {}
        # Profiles, classes and providers any agent ever named (submit validates against
        # these without scanning every agent).
        self.gpu_names: set[str] = set()
        self.providers: set[str] = set()

    def _note(self, caps: agent_pb2.AgentCapabilities) -> None:
        self.gpu_names |= {caps.profile, caps.gpu_class} - {""}
        if caps.provider:
            self.providers.add(caps.provider)

    async def load(self) -> None:
        for record in await self._repo.load_agents():
            self._records[record.id] = record
            caps = agent_pb2.AgentCapabilities.FromString(record.capabilities)
            self.states[record.id] = AgentState(record.id, caps)
            self._note(caps)

    async def register(self, request: agent_pb2.RegisterAgentRequest) -> tuple[AgentState, str]:
        """Enrol with the provisioning secret, or re-register with the agent's credential."""
        caps = self._classify(request.capabilities)
        if request.agent_id:
            record = self._records.get(request.agent_id)
            parts = split_credential(request.secret, AGENT_CREDENTIAL_PREFIX)
            if (
                record is None
                or record.revoked
                or parts is None
                or parts[0] != record.id
                or not matches(parts[1], record.salt, record.digest)
            ):
                raise Unauthenticated(f"agent {request.agent_id!r}: credential not accepted")
            credential = request.secret
        elif self._accounts.is_provisioning_secret(request.secret):
            agent_id, secret = f"a-{new_id()}", new_secret()
            salt, digest = salted_hash(secret)
            record = AgentRecord(agent_id, salt, digest, b"", time.time())
            credential = f"{AGENT_CREDENTIAL_PREFIX}{agent_id}_{secret}"
        else:
            raise Unauthenticated("agent provisioning secret not accepted")
        record.capabilities = caps.SerializeToString()
        self._records[record.id] = record
        await self._repo.put_agent(record)
        state = self.states.get(record.id)
        if state is None:
            state = self.states[record.id] = AgentState(record.id, caps)
        state.caps = caps
        self._note(caps)
        state.cached_projects = set(request.cached_projects)
        state.cached_env_hashes = set(request.cached_env_hashes)
        return state, credential

    def authenticate(self, credential: str) -> AgentState:
        parts = split_credential(credential, AGENT_CREDENTIAL_PREFIX)
        record = self._records.get(parts[0]) if parts else None
        if parts is None or record is None or not matches(parts[1], record.salt, record.digest):
            raise Unauthenticated("agent credential not accepted: register first")
        if record.revoked:
            raise Unauthenticated(f"agent {record.id} has been revoked")
        return self.states[record.id]

    def record(self, agent_id: str) -> AgentRecord:
        record = self._records.get(agent_id)
        if record is None:
            raise NotFound(f"no agent {agent_id!r}; `c3ctl admin agent list` shows the agents")
        return record

    def records(self) -> list[AgentRecord]:
        """Every enrolled agent, oldest enrolment first."""
        return sorted(self._records.values(), key=lambda r: (r.registered_at, r.id))

    async def revoke(self, agent_id: str) -> tuple[AgentState, bool]:
        """Refuse the agent's credential from now on (persisted) and close its stream.

        Its jobs are not touched here: with the stream closed and Connect refused the agent
        falls silent, and the scheduler's loss timer applies the agent-loss rules to them.
        Returns the agent and whether it was revoked by this call.
        """
        record = self.record(agent_id)
        state = self.states[agent_id]
        newly = not record.revoked
        if newly:
            record.revoked = True
            await self._repo.put_agent(record)
        if state.outbox is not None:
            state.outbox.put_nowait(None)  # the gateway ends the stream and disconnects it
        return state, newly
