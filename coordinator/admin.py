"""Admin gRPC service: orgs, top-ups, one-time agent secrets, plan changes, agents.
Every method but ChangePlan needs an operator's admin key (coordinator/auth.py checks it)."""

from __future__ import annotations

import logging
from typing import Protocol

from c3.grpctypes import Context
from c3.v1 import admin_pb2, admin_pb2_grpc
from coordinator.accounts import Accounts
from coordinator.agents import AgentRegistry, AgentState
from coordinator.auth import caller
from coordinator.billing import Billing
from coordinator.events import timestamp
from coordinator.model import Org

log = logging.getLogger(__name__)

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
NO_PAYMENT_NOTICE = "no payment provider is configured: the plan changed without a charge"


class AgentLoss(Protocol):
    def lost(self, agent: AgentState, why: str) -> None: ...


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        accounts: Accounts,
        billing: Billing,
        default_plan: str,
        currency: str,
        agents: AgentRegistry,
        liveness: AgentLoss,
    ) -> None:
        self._accounts = accounts
        self._agents = agents
        self._liveness = liveness
        self._billing = billing
        self._default_plan = default_plan
        self._currency = currency

    def _info(self, org: Org) -> admin_pb2.OrgInfo:
        return admin_pb2.OrgInfo(
            id=org.id, name=org.name, plan=org.plan, balance_minor=org.balance_minor,
            created_at=timestamp(org.created_at), operator=self._accounts.is_operator(org.id),
        )  # fmt: skip

    async def CreateOrg(
        self, request: admin_pb2.CreateOrgRequest, context: Context
    ) -> admin_pb2.CreateOrgResponse:
        who = caller()
        org, key = await self._accounts.create_org_with_admin(
            request.name, request.plan or self._default_plan
        )
        log.info("org %s (%s) created by key %s", org.id, org.name, who.key.id)
        return admin_pb2.CreateOrgResponse(org=self._info(org), admin_key=key)

    async def ListOrgs(
        self, request: admin_pb2.ListOrgsRequest, context: Context
    ) -> admin_pb2.ListOrgsResponse:
        return admin_pb2.ListOrgsResponse(orgs=[self._info(o) for o in self._accounts.list_orgs()])

    async def TopUp(
        self, request: admin_pb2.TopUpRequest, context: Context
    ) -> admin_pb2.TopUpResponse:
        who = caller()
        org = await self._accounts.top_up(request.org, request.amount_minor)
        self._billing.balance_changed(org.id)
        log.info("top-up of %d for org %s by key %s", request.amount_minor, org.id, who.key.id)
        return admin_pb2.TopUpResponse(org=self._info(org), currency=self._currency)

    async def CreateAgentToken(
        self, request: admin_pb2.CreateAgentTokenRequest, context: Context
    ) -> admin_pb2.CreateAgentTokenResponse:
        who = caller()
        secret = await self._accounts.create_provisioning_secret(one_time=True)
        log.info("one-time agent secret issued to key %s", who.key.id)
        return admin_pb2.CreateAgentTokenResponse(secret=secret)

    async def ChangePlan(
        self, request: admin_pb2.ChangePlanRequest, context: Context
    ) -> admin_pb2.ChangePlanResponse:
        who = caller()
        target = self._accounts.find_org(request.org) if request.org else who.org
        if target.id == who.org.id and not self._accounts.is_operator(who.org.id):
            self._accounts.require_org_admin(who)
        else:
            self._accounts.require_operator(who)
        org, previous = await self._accounts.set_plan(target.id, request.plan)
        return admin_pb2.ChangePlanResponse(org=self._info(org), previous_plan=previous)

    def _agent_info(self, state: AgentState) -> admin_pb2.AgentInfo:
        record = self._agents.record(state.id)
        caps = state.caps
        info = admin_pb2.AgentInfo(
            id=state.id, profile=caps.profile, provider=caps.provider,
            connected=state.connected, revoked=record.revoked,
            registered_at=timestamp(record.registered_at),
            running_job_ids=sorted(state.running),
        )  # fmt: skip
        if state.last_seen:
            info.last_seen.CopyFrom(timestamp(state.last_seen))
        return info

    async def ListAgents(
        self, request: admin_pb2.ListAgentsRequest, context: Context
    ) -> admin_pb2.ListAgentsResponse:
        states = [self._agents.states[r.id] for r in self._agents.records()]
        return admin_pb2.ListAgentsResponse(agents=[self._agent_info(s) for s in states])

    async def RevokeAgent(
        self, request: admin_pb2.RevokeAgentRequest, context: Context
    ) -> admin_pb2.RevokeAgentResponse:
        who = caller()
        state, newly = await self._agents.revoke(request.agent_id)
        if newly:
            # Its jobs follow the agent-loss rules now, not after the loss timer.
            self._liveness.lost(state, f"agent {state.id} revoked by an operator")
        log.warning(
            "agent %s revoked by key %s%s; running jobs: %s", state.id, who.key.id,
            "" if newly else " (already revoked)", ", ".join(sorted(state.running)) or "none",
        )  # fmt: skip
        return admin_pb2.RevokeAgentResponse(agent=self._agent_info(state), newly_revoked=newly)
