"""Admin commands: orgs, top-ups, agents, certificates; and `c3ctl upgrade`."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

import click
from rich.table import Table

from c3 import certs as certificates
from c3.errors import InvalidArgument
from c3.v1 import admin_pb2, admin_pb2_grpc
from c3ctl import render, session
from c3ctl.aio import run

T = TypeVar("T")


def parse_amount(text: str) -> int:
    """Pounds ("5", "2.50") -> minor units (500, 250); refuses anything else."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument(f"amount {text!r} is not a number; write pounds like 5 or 2.50") from None
    if not value.is_finite() or value <= 0:
        raise InvalidArgument(f"amount {text!r} must be a positive number of pounds (like 5 or 2.50)")
    minor = value * 100
    if minor != minor.to_integral_value():
        raise InvalidArgument(f"amount {text!r} has more than two decimal places")
    return int(minor)


def _admin(call: Callable[[admin_pb2_grpc.AdminAsyncStub], Awaitable[T]]) -> T:
    """One typed Admin call with the caller's key (run to completion)."""

    async def go() -> T:
        async with session.coordinator() as s:
            return await call(s.admin)

    return run(go())


def _org_row(org: admin_pb2.OrgInfo) -> dict[str, object]:
    return {"id": org.id, "name": org.name, "plan": org.plan,
            "balance_minor": org.balance_minor, "operator": org.operator}  # fmt: skip


@click.group()
def admin() -> None:
    """Operator verbs (need an admin key of an operator org)."""


@admin.group("org")
def admin_org() -> None:
    """Create and list orgs."""


@admin_org.command("create")
@click.argument("name")
@click.option("--plan", default="", help="free, pro or team (default: the server's default)")
@click.option("--json", "as_json", is_flag=True)
def org_create(name: str, plan: str, as_json: bool) -> None:
    reply = _admin(lambda admin: admin.CreateOrg(admin_pb2.CreateOrgRequest(name=name, plan=plan)))
    if as_json:
        click.echo(json.dumps({"org": _org_row(reply.org), "admin_key": reply.admin_key}))
        return
    render.err.print(
        f"created org {reply.org.name} ({reply.org.id}, plan {reply.org.plan}); its first "
        "admin key follows, shown this once:"
    )
    click.echo(reply.admin_key)


@admin_org.command("list")
@click.option("--json", "as_json", is_flag=True)
def org_list(as_json: bool) -> None:
    reply = _admin(lambda admin: admin.ListOrgs(admin_pb2.ListOrgsRequest()))
    if as_json:
        click.echo(json.dumps({"orgs": [_org_row(o) for o in reply.orgs]}))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "PLAN", "BALANCE", ""):
        table.add_column(column)
    for o in reply.orgs:
        table.add_row(o.id, o.name, o.plan, render.money(o.balance_minor, "GBP"),
                      "operator" if o.operator else "")  # fmt: skip
    render.out.print(table)


@admin.command("topup")
@click.argument("org")
@click.argument("amount")
def topup(org: str, amount: str) -> None:
    """Add AMOUNT pounds (5, 2.50) to ORG's balance (id or name)."""
    minor = parse_amount(amount)
    reply = _admin(lambda admin: admin.TopUp(admin_pb2.TopUpRequest(org=org, amount_minor=minor)))
    render.err.print(
        f"topped up {reply.org.name} by {render.money(minor, reply.currency)}; "
        f"balance now {render.money(reply.org.balance_minor, reply.currency)}"
    )


@admin.command("agent-token")
def agent_token() -> None:
    """A one-time provisioning secret for one agent (`c3-agent --secret-file`)."""
    reply = _admin(lambda admin: admin.CreateAgentToken(admin_pb2.CreateAgentTokenRequest()))
    render.err.print("one-time agent secret (valid for a single enrolment), shown once:")
    click.echo(reply.secret)


@admin.group("agent")
def admin_agent() -> None:
    """List and revoke enrolled agents."""


def _agent_row(a: admin_pb2.AgentInfo) -> dict[str, object]:
    return {
        "id": a.id, "profile": a.profile, "provider": a.provider, "connected": a.connected,
        "last_seen": a.last_seen.ToJsonString() if a.HasField("last_seen") else None,
        "revoked": a.revoked, "running_job_ids": list(a.running_job_ids),
    }  # fmt: skip


def _last_seen(a: admin_pb2.AgentInfo) -> str:
    if not a.HasField("last_seen"):
        return "-"
    ago = max(0.0, time.time() - a.last_seen.ToNanoseconds() / 1e9)
    return f"{render.human_duration(ago)} ago"


@admin_agent.command("list")
@click.option("--json", "as_json", is_flag=True)
def agent_list(as_json: bool) -> None:
    """Every enrolled agent: profile, provider, connection, last seen, revoked."""
    reply = _admin(lambda admin: admin.ListAgents(admin_pb2.ListAgentsRequest()))
    if as_json:
        click.echo(json.dumps({"agents": [_agent_row(a) for a in reply.agents]}))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "PROFILE", "PROVIDER", "CONNECTED", "LAST SEEN", "REVOKED"):
        table.add_column(column)
    for a in reply.agents:
        table.add_row(a.id, a.profile, a.provider or "-", "yes" if a.connected else "no",
                      _last_seen(a), "revoked" if a.revoked else "")  # fmt: skip
    render.out.print(table)


@admin_agent.command("revoke")
@click.argument("agent_id")
def agent_revoke(agent_id: str) -> None:
    """Refuse AGENT_ID's credential from now on and close its stream."""
    reply = _admin(lambda admin: admin.RevokeAgent(admin_pb2.RevokeAgentRequest(agent_id=agent_id)))
    if not reply.newly_revoked:
        render.err.print(f"agent {reply.agent.id} was already revoked")
        return
    running = ", ".join(reply.agent.running_job_ids)
    render.err.print(
        f"revoked agent {reply.agent.id}; its stream is closed"
        + (f" and its jobs ({running}) will be handled as on a lost agent" if running else "")
    )


@admin.command("certs")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="directory for ca.pem, server.pem, agent.pem and their keys")  # fmt: skip
@click.option("--hosts", default=",".join(certificates.DEFAULT_HOSTS), show_default=True,
              help="comma-separated names/IPs the server certificate is valid for")  # fmt: skip
def certs(out_dir: Path, hosts: str) -> None:
    """Generate a CA, a server certificate and an agent client certificate."""
    files = certificates.generate(out_dir, tuple(hosts.split(",")))
    render.err.print(
        f"wrote {files.ca_cert}, {files.server_cert} (hosts {hosts}), {files.agent_cert} "
        f"and keys (0600) in {out_dir}\n"
        f"servers: --tls-cert {files.server_cert} --tls-key {files.server_key} "
        f"[--tls-client-ca {files.ca_cert}]\n"
        f"agents:  --tls-ca {files.ca_cert} --tls-cert {files.agent_cert} --tls-key {files.agent_key}"
    )


@click.command()
@click.argument("plan")
def upgrade(plan: str) -> None:
    """Change your org's plan (an admin key of the org is needed)."""
    reply = _admin(lambda admin: admin.ChangePlan(admin_pb2.ChangePlanRequest(plan=plan)))
    render.err.print(
        "note: no payment provider is configured here; the plan changes without a charge"
    )
    render.err.print(f"{reply.org.name}: plan {reply.previous_plan} -> {reply.org.plan}")
