"""Who may call each coordinator method: the table, and the checks behind its entries.

MEMBER: any valid API key (its org is the caller's; handlers read it with `caller()`).
OPERATOR: an admin key of an operator org (platform verbs). AGENT: an enrolled agent's
credential (`agent()`). PUBLIC: no credential (enrolment carries its secret in the
request; health and reflection). ChangePlan is MEMBER: who may change which org's plan
depends on the request, and Accounts checks it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from c3.auth import PUBLIC_METHODS, Rule, principal, public
from c3.errors import C3Error
from c3.grpctypes import Context
from c3.grpcutil import bearer_secret
from coordinator.accounts import Accounts, Caller
from coordinator.agents import AgentRegistry, AgentState

log = logging.getLogger(__name__)


class Permission(enum.Enum):
    PUBLIC = "public"
    MEMBER = "member"
    OPERATOR = "operator"
    AGENT = "agent"


_MEMBER_METHODS = """
    SubmitJob SubmitJobs GetJob ListJobs CancelJob MarkSynced StreamJobEvents WatchJobs
    ListHardware GetBalance CreateApiKey ListApiKeys RevokeApiKey WhoAmI IssueStorageToken
""".split()
_COORDINATOR = {name: Permission.MEMBER for name in _MEMBER_METHODS}
_ADMIN = {
    "CreateOrg": Permission.OPERATOR,
    "ListOrgs": Permission.OPERATOR,
    "TopUp": Permission.OPERATOR,
    "CreateAgentToken": Permission.OPERATOR,
    "ChangePlan": Permission.MEMBER,
    "ListAgents": Permission.OPERATOR,
    "RevokeAgent": Permission.OPERATOR,
}
_GATEWAY = {"Register": Permission.PUBLIC, "Connect": Permission.AGENT}

PERMISSIONS: dict[str, Permission] = {
    **{f"/c3.v1.Coordinator/{m}": p for m, p in _COORDINATOR.items()},
    **{f"/c3.v1.Admin/{m}": p for m, p in _ADMIN.items()},
    **{f"/c3.v1.AgentGateway/{m}": p for m, p in _GATEWAY.items()},
}


def caller() -> Caller:
    """The API key's holder calling the running handler."""
    return principal(Caller)


def agent() -> AgentState:
    """The agent calling the running handler."""
    return principal(AgentState)


def rules(accounts: Accounts, agents: AgentRegistry) -> Mapping[str, Rule]:
    def member(context: Context, method: str, request: Any) -> Caller:
        return accounts.authenticate(bearer_secret(context))

    def operator(context: Context, method: str, request: Any) -> Caller:
        found = member(context, method, request)
        try:
            accounts.require_operator(found)
        except C3Error:
            verb = method.rsplit("/", 1)[-1]
            log.warning("refused %s for key %s of org %s", verb, found.key.id, found.org.id)
            raise
        return found

    def enrolled_agent(context: Context, method: str, request: Any) -> AgentState:
        return agents.authenticate(bearer_secret(context))

    checks: dict[Permission, Rule] = {
        Permission.PUBLIC: public,
        Permission.MEMBER: member,
        Permission.OPERATOR: operator,
        Permission.AGENT: enrolled_agent,
    }
    return {**PUBLIC_METHODS, **{m: checks[p] for m, p in PERMISSIONS.items()}}
