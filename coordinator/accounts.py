"""Orgs, API keys and agent provisioning secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from c3.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from coordinator.model import ApiKey, Org
from coordinator.repository import Repository
from coordinator.secrets_util import matches, new_id, new_secret, salted_hash, split_credential

log = logging.getLogger(__name__)

API_KEY_PREFIX = "c3_key_"
PROVISIONING_PREFIX = "c3_prov_"
# last_used_at is bookkeeping: write it at most this often per key.
_LAST_USED_WRITE_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Caller:
    """Who an RPC is from, once its API key checked out."""

    key: ApiKey
    org: Org


class Accounts:
    def __init__(
        self, repo: Repository, starting_credit_minor: int, plans: Collection[str]
    ) -> None:
        self._repo = repo
        self._starting_credit = starting_credit_minor
        # The plans the coordinator has concurrency limits for (--concurrency-limits).
        self._plans = frozenset(plans)
        self._orgs: dict[str, Org] = {}
        self._keys: dict[str, ApiKey] = {}
        self._provisioning: list[tuple[str, bytes, bytes]] = []
        self._operators: set[str] = set()
        # One-time provisioning secrets: id -> used_at (0.0 while unused).
        self._one_time: dict[str, float] = {}

    async def load(self) -> None:
        self._orgs = {o.id: o for o in await self._repo.load_orgs()}
        self._keys = {k.id: k for k in await self._repo.load_keys()}
        self._provisioning = await self._repo.load_provisioning_secrets()
        self._operators = await self._repo.load_operators()
        self._one_time = await self._repo.load_one_time_secrets()

    @property
    def empty(self) -> bool:
        return not self._orgs

    # -- orgs ------------------------------------------------------------------------
    async def create_org(self, name: str, plan: str) -> Org:
        if any(o.name == name for o in self._orgs.values()):
            raise InvalidArgument(f"an org named {name!r} already exists")
        org = Org(f"org-{new_id()}", name, plan, self._starting_credit, time.time())
        self._orgs[org.id] = org
        await self._repo.put_org(org)
        return org

    def org(self, org_id: str) -> Org:
        try:
            return self._orgs[org_id]
        except KeyError:
            raise NotFound(f"unknown org {org_id}") from None

    def find_org(self, ref: str) -> Org:
        """An org by id or by name."""
        org = self._orgs.get(ref) or next((o for o in self._orgs.values() if o.name == ref), None)
        if org is None:
            raise NotFound(f"no org {ref!r} (c3ctl admin org list)")
        return org

    def list_orgs(self) -> list[Org]:
        return sorted(self._orgs.values(), key=lambda o: o.created_at)

    def is_operator(self, org_id: str) -> bool:
        return org_id in self._operators

    async def make_operator(self, org_id: str) -> None:
        self._operators.add(org_id)
        await self._repo.put_operator(org_id)

    def require_operator(self, caller: Caller) -> None:
        """Platform verbs (orgs, top-ups, agent tokens): an admin key of an operator org."""
        if not (caller.key.admin and caller.org.id in self._operators):
            raise PermissionDenied(
                f"key {caller.key.id} is not an operator admin key; this needs the key "
                "`c3ctl up` created (or one from an operator org)"
            )

    def require_org_admin(self, caller: Caller) -> None:
        if not caller.key.admin:
            raise PermissionDenied(
                f"key {caller.key.id} is not an admin key of org {caller.org.name}; "
                "ask an admin of your org"
            )

    async def create_org_with_admin(self, name: str, plan: str) -> tuple[Org, str]:
        name = name.strip()
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise InvalidArgument(
                f"org name {name!r}: use 1-64 letters, digits, '-', '_' or '.'"
            )
        self._check_plan(plan)
        org = await self.create_org(name, plan)
        _, secret = await self.create_key(org.id, f"{name}-admin", admin=True)
        return org, secret

    def _check_plan(self, plan: str) -> None:
        if plan not in self._plans:
            raise InvalidArgument(
                f"unknown plan {plan!r}; plans: {', '.join(sorted(self._plans))} "
                "(the coordinator's --concurrency-limits names them)"
            )

    async def set_plan(self, org_id: str, plan: str) -> tuple[Org, str]:
        """Change an org's plan; returns (org, previous plan)."""
        self._check_plan(plan)
        old = self.org(org_id)
        org = replace(old, plan=plan)
        self._orgs[org.id] = org
        await self._repo.put_org(org)
        log.info("org %s plan %s -> %s", org.id, old.plan, plan)
        return org, old.plan

    # -- money ---------------------------------------------------------------------------
    def adjust_balance(self, org_id: str, delta_minor: int) -> asyncio.Future[None]:
        """Add (or with a negative delta, take) integer minor units; durable when awaited."""
        if not isinstance(delta_minor, int):
            raise InvalidArgument("balance changes are integer minor units")
        org = self.org(org_id)
        org = replace(org, balance_minor=org.balance_minor + delta_minor)
        self._orgs[org.id] = org
        return self._repo.put_org(org)

    async def top_up(self, org_ref: str, amount_minor: int) -> Org:
        if amount_minor <= 0:
            raise InvalidArgument(f"top-up amount must be positive (got {amount_minor} minor units)")
        org = self.find_org(org_ref)
        await self.adjust_balance(org.id, amount_minor)
        log.info("org %s topped up by %d minor units", org.id, amount_minor)
        return self.org(org.id)

    def require_credit(self, org_id: str) -> None:
        org = self.org(org_id)
        if org.balance_minor <= 0:
            raise FailedPrecondition(
                f"org {org.name} has no credit (balance {org.balance_minor / 100:.2f}); "
                "ask an operator to top it up (c3ctl admin topup ORG AMOUNT)"
            )

    # -- API keys ----------------------------------------------------------------------
    async def create_key(self, org_id: str, name: str, admin: bool = False) -> tuple[ApiKey, str]:
        """A new key and its secret (`c3_key_<id>_<secret>`), which is never stored."""
        name = name.strip()
        if not name or len(name) > 64:
            raise InvalidArgument("API key name must be 1-64 characters (c3ctl apikey create NAME)")
        self.org(org_id)
        secret = new_secret()
        salt, digest = salted_hash(secret)
        key = ApiKey(new_id(), org_id, name, salt, digest, admin, time.time())
        self._keys[key.id] = key
        await self._repo.put_key(key)
        return key, f"{API_KEY_PREFIX}{key.id}_{secret}"

    def authenticate(self, presented: str) -> Caller:
        parts = split_credential(presented, API_KEY_PREFIX)
        key = self._keys.get(parts[0]) if parts else None
        if parts is None or key is None or not matches(parts[1], key.salt, key.digest):
            raise Unauthenticated("invalid API key (check C3_API_KEY or .c3.local)")
        if key.revoked:
            raise Unauthenticated(f"API key {key.id} has been revoked")
        now = time.time()
        if now - key.last_used_at > _LAST_USED_WRITE_INTERVAL_S:
            key.last_used_at = now
            self._repo.put_key(key)
        return Caller(key, self.org(key.org_id))

    def list_keys(self, org_id: str) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if k.org_id == org_id]
        return sorted(keys, key=lambda k: k.created_at)

    async def revoke_key(self, org_id: str, key_id: str) -> ApiKey:
        key = self._keys.get(key_id)
        if key is None or key.org_id != org_id:
            raise NotFound(f"no API key {key_id!r} in this org (c3ctl apikey list)")
        key.revoked = True
        await self._repo.put_key(key)
        return replace(key)

    # -- agent provisioning --------------------------------------------------------------
    async def create_provisioning_secret(self, one_time: bool = False) -> str:
        """A secret agents enrol with; a one-time one is consumed by its first use."""
        secret_id, secret = new_id(), new_secret()
        salt, digest = salted_hash(secret)
        if one_time:
            self._one_time[secret_id] = 0.0
            self._repo.put_one_time_secret(secret_id, 0.0)
        self._provisioning.append((secret_id, salt, digest))
        await self._repo.put_provisioning_secret(secret_id, salt, digest, time.time())
        return f"{PROVISIONING_PREFIX}{secret_id}_{secret}"

    def is_provisioning_secret(self, presented: str) -> bool:
        """True when `presented` may enrol an agent now; consumes a one-time secret."""
        parts = split_credential(presented, PROVISIONING_PREFIX)
        if parts is None:
            return False
        valid = any(
            sid == parts[0] and matches(parts[1], salt, digest)
            for sid, salt, digest in self._provisioning
        )
        if not valid:
            return False
        if parts[0] in self._one_time:
            if self._one_time[parts[0]]:
                log.warning("refused a replayed one-time agent secret %s", parts[0])
                return False
            self._one_time[parts[0]] = time.time()
            self._repo.put_one_time_secret(parts[0], self._one_time[parts[0]])
        return True

    # -- first start ---------------------------------------------------------------------
    async def bootstrap(self, path: Path, plan: str) -> None:
        """On an empty database: org "local", an admin key and an agent secret, to `path`."""
        if not self.empty:
            if not path.exists():
                log.warning("database already initialised; not rewriting %s", path)
            return
        org = await self.create_org("local", plan)
        await self.make_operator(org.id)
        _, api_key = await self.create_key(org.id, "local-admin", admin=True)
        agent_secret = await self.create_provisioning_secret()
        payload = json.dumps({"org_id": org.id, "api_key": api_key, "agent_secret": agent_secret})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(payload + "\n")
        os.replace(tmp, path)
        log.info("bootstrapped org %s; credentials written to %s", org.id, path)
