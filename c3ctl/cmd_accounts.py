"""Account commands: whoami, apikey create|list|revoke, balance."""

from __future__ import annotations

import json

import click
from rich.table import Table

from c3.v1 import coordinator_pb2
from c3ctl import render, session
from c3ctl.aio import run


@click.command()
@click.option("--json", "as_json", is_flag=True)
def whoami(as_json: bool) -> None:
    """The credential in use (its id, never the secret), its org and plan."""
    creds = session.credentials()

    async def go() -> coordinator_pb2.WhoAmIResponse:
        async with session.coordinator() as s:
            reply = await s.call("WhoAmI", coordinator_pb2.WhoAmIRequest())
            assert isinstance(reply, coordinator_pb2.WhoAmIResponse)
            return reply

    me = run(go())
    if as_json:
        click.echo(json.dumps({
            "key_id": me.key_id, "key_name": me.key_name, "org_id": me.org_id,
            "org": me.org_name, "plan": me.plan, "admin": me.admin, "source": creds.source,
            "coordinator": creds.coordinator_address,
        }))
        return
    render.out.print(f"key     {me.key_id} ({me.key_name or 'unnamed'}, from {creds.source})")
    admin_mark = "  \\[admin]" if me.admin else ""  # \\[ : a literal bracket for rich
    render.out.print(f"org     {me.org_name} ({me.org_id}){admin_mark}")
    render.out.print(f"plan    {me.plan}")
    render.out.print(f"server  {creds.coordinator_address}")


@click.group()
def apikey() -> None:
    """Create, list and revoke API keys of your org."""


@apikey.command("create")
@click.argument("name")
def apikey_create(name: str) -> None:
    async def go() -> coordinator_pb2.CreateApiKeyResponse:
        async with session.coordinator() as s:
            reply = await s.call("CreateApiKey", coordinator_pb2.CreateApiKeyRequest(name=name))
            assert isinstance(reply, coordinator_pb2.CreateApiKeyResponse)
            return reply

    reply = run(go())
    render.err.print(f"created key {reply.key.id} ({name}); this is the only time it is shown:")
    click.echo(reply.secret)


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True)
def apikey_list(as_json: bool) -> None:
    async def go() -> list[coordinator_pb2.ApiKeyInfo]:
        async with session.coordinator() as s:
            reply = await s.call("ListApiKeys", coordinator_pb2.ListApiKeysRequest())
            assert isinstance(reply, coordinator_pb2.ListApiKeysResponse)
            return list(reply.keys)

    keys = run(go())
    if as_json:
        click.echo(json.dumps({"keys": [{
            "id": k.id, "name": k.name, "created": k.created_at.ToJsonString(),
            "last_used": k.last_used_at.ToJsonString() if k.last_used_at.seconds else None,
            "revoked": k.revoked} for k in keys]}))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "CREATED", "LAST USED", "STATE"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.id, k.name, k.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            k.last_used_at.ToDatetime().strftime("%Y-%m-%d %H:%M") if k.last_used_at.seconds else "-",
            "revoked" if k.revoked else "active",
        )
    render.out.print(table)


@apikey.command("revoke")
@click.argument("key_id")
def apikey_revoke(key_id: str) -> None:
    async def go() -> None:
        async with session.coordinator() as s:
            await s.call("RevokeApiKey", coordinator_pb2.RevokeApiKeyRequest(key_id=key_id))

    run(go())
    render.err.print(f"revoked {key_id}")


@click.command()
@click.option("--history", is_flag=True, help="List each charge by job.")
@click.option("--json", "as_json", is_flag=True)
def balance(history: bool, as_json: bool) -> None:
    """Balance, this month's spend and storage used."""

    async def go() -> coordinator_pb2.GetBalanceResponse:
        async with session.coordinator() as s:
            reply = await s.call("GetBalance", coordinator_pb2.GetBalanceRequest(history=history))
            assert isinstance(reply, coordinator_pb2.GetBalanceResponse)
            return reply

    b = run(go())
    if as_json:
        click.echo(json.dumps({
            "balance_minor": b.balance_minor, "currency": b.currency or "GBP",
            "month_spend_minor": b.month_spend_minor, "storage_bytes": b.storage_bytes,
            "plan": b.plan, "charges": [{"job_id": c.job_id, "amount_minor": c.amount_minor,
                                          "seconds": c.seconds, "gpu_profile": c.gpu_profile}
                                         for c in b.charges]}))
        return
    render.out.print(f"balance       {render.money(b.balance_minor, b.currency)}")
    render.out.print(f"this month    {render.money(b.month_spend_minor, b.currency)}")
    render.out.print(f"storage       {render.human_bytes(b.storage_bytes)}")
    render.out.print(f"plan          {b.plan}")
    if history and b.charges:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("JOB", "PROFILE", "SECONDS", "AMOUNT"):
            table.add_column(column)
        for c in b.charges:
            table.add_row(c.job_id, c.gpu_profile, f"{c.seconds:.0f}", render.money(c.amount_minor, b.currency))
        render.out.print(table)



