"""Orgs, API keys and agent provisioning secrets."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from c3.errors import InvalidArgument, NotFound, Unauthenticated
from coordinator.model import ApiKey, Org
from coordinator.repo import Repository
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
    def __init__(self, repo: Repository, starting_credit_minor: int) -> None:
        self._repo = repo
        self._starting_credit = starting_credit_minor
        self._orgs: dict[str, Org] = {}
        self._keys: dict[str, ApiKey] = {}
        self._provisioning: list[tuple[str, bytes, bytes]] = []

    async def load(self) -> None:
        self._orgs = {o.id: o for o in await self._repo.load_orgs()}
        self._keys = {k.id: k for k in await self._repo.load_keys()}
        self._provisioning = await self._repo.load_provisioning_secrets()

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
    async def create_provisioning_secret(self) -> str:
        secret_id, secret = new_id(), new_secret()
        salt, digest = salted_hash(secret)
        self._provisioning.append((secret_id, salt, digest))
        await self._repo.put_provisioning_secret(secret_id, salt, digest, time.time())
        return f"{PROVISIONING_PREFIX}{secret_id}_{secret}"

    def is_provisioning_secret(self, presented: str) -> bool:
        parts = split_credential(presented, PROVISIONING_PREFIX)
        if parts is None:
            return False
        return any(
            sid == parts[0] and matches(parts[1], salt, digest)
            for sid, salt, digest in self._provisioning
        )

    # -- first start ---------------------------------------------------------------------
    async def bootstrap(self, path: Path, plan: str) -> None:
        """On an empty database: org "local", an admin key and an agent secret, to `path`."""
        if not self.empty:
            if not path.exists():
                log.warning("database already initialised; not rewriting %s", path)
            return
        org = await self.create_org("local", plan)
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
