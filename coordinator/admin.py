"""Admin gRPC service: orgs, top-ups, one-time agent secrets, plan changes, agents."""

from __future__ import annotations

import logging

from grpc import aio

from c3.grpcutil import bearer_secret
from c3.v1 import admin_pb2, admin_pb2_grpc
from coordinator.accounts import Accounts, Caller
from coordinator.agents import AgentRegistry, AgentState
from coordinator.billing import Billing
from coordinator.events import timestamp
from coordinator.model import Org
from coordinator.scheduler import Scheduler

log = logging.getLogger(__name__)

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
NO_PAYMENT_NOTICE = "no payment provider is configured: the plan changed without a charge"


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self, accounts: Accounts, billing: Billing, default_plan: str, currency: str,
        agents: AgentRegistry, scheduler: Scheduler,
    ) -> None:  # fmt: skip
        self._accounts = accounts
        self._agents = agents
        self._scheduler = scheduler
        self._billing = billing
        self._default_plan = default_plan
        self._currency = currency

    def _caller(self, context: aio.ServicerContext) -> Caller:
        return self._accounts.authenticate(bearer_secret(context))

    def _operator(self, context: aio.ServicerContext, verb: str) -> Caller:
        caller = self._caller(context)
        try:
            self._accounts.require_operator(caller)
        except Exception:
            log.warning("refused %s for key %s of org %s", verb, caller.key.id, caller.org.id)
            raise
        return caller

    def _info(self, org: Org) -> admin_pb2.OrgInfo:
        return admin_pb2.OrgInfo(
            id=org.id, name=org.name, plan=org.plan, balance_minor=org.balance_minor,
            created_at=timestamp(org.created_at), operator=self._accounts.is_operator(org.id),
        )  # fmt: skip

    async def CreateOrg(
        self, request: admin_pb2.CreateOrgRequest, context: aio.ServicerContext
    ) -> admin_pb2.CreateOrgResponse:
        caller = self._operator(context, "CreateOrg")
        org, key = await self._accounts.create_org_with_admin(
            request.name, request.plan or self._default_plan
        )
        log.info("org %s (%s) created by key %s", org.id, org.name, caller.key.id)
        return admin_pb2.CreateOrgResponse(org=self._info(org), admin_key=key)

    async def ListOrgs(
        self, request: admin_pb2.ListOrgsRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListOrgsResponse:
        self._operator(context, "ListOrgs")
        return admin_pb2.ListOrgsResponse(orgs=[self._info(o) for o in self._accounts.list_orgs()])

    async def TopUp(
        self, request: admin_pb2.TopUpRequest, context: aio.ServicerContext
    ) -> admin_pb2.TopUpResponse:
        caller = self._operator(context, "TopUp")
        org = await self._accounts.top_up(request.org, request.amount_minor)
        self._billing.balance_changed(org.id)
        log.info("top-up of %d for org %s by key %s", request.amount_minor, org.id, caller.key.id)
        return admin_pb2.TopUpResponse(org=self._info(org), currency=self._currency)

    async def CreateAgentToken(
        self, request: admin_pb2.CreateAgentTokenRequest, context: aio.ServicerContext
    ) -> admin_pb2.CreateAgentTokenResponse:
        caller = self._operator(context, "CreateAgentToken")
        secret = await self._accounts.create_provisioning_secret(one_time=True)
        log.info("one-time agent secret issued to key %s", caller.key.id)
        return admin_pb2.CreateAgentTokenResponse(secret=secret)

    async def ChangePlan(
        self, request: admin_pb2.ChangePlanRequest, context: aio.ServicerContext
    ) -> admin_pb2.ChangePlanResponse:
        caller = self._caller(context)
        target = self._accounts.find_org(request.org) if request.org else caller.org
        if target.id == caller.org.id and not self._accounts.is_operator(caller.org.id):
            self._accounts.require_org_admin(caller)
        else:
            self._accounts.require_operator(caller)
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
        self, request: admin_pb2.ListAgentsRequest, context: aio.ServicerContext
    ) -> admin_pb2.ListAgentsResponse:
        self._operator(context, "ListAgents")
        states = [self._agents.states[r.id] for r in self._agents.records()]
        return admin_pb2.ListAgentsResponse(agents=[self._agent_info(s) for s in states])

    async def RevokeAgent(
        self, request: admin_pb2.RevokeAgentRequest, context: aio.ServicerContext
    ) -> admin_pb2.RevokeAgentResponse:
        caller = self._operator(context, "RevokeAgent")
        state, newly = await self._agents.revoke(request.agent_id)
        if newly:
            # Its jobs follow the agent-loss rules now, not after the loss timer.
            self._scheduler.lost(state, f"agent {state.id} revoked by an operator")
        log.warning(
            "agent %s revoked by key %s%s; running jobs: %s", state.id, caller.key.id,
            "" if newly else " (already revoked)", ", ".join(sorted(state.running)) or "none",
        )  # fmt: skip
        return admin_pb2.RevokeAgentResponse(agent=self._agent_info(state), newly_revoked=newly)
