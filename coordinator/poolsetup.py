"""Builds the warm pools and their providers from `--pool-config` at coordinator start."""

from __future__ import annotations

import os
from pathlib import Path

from coordinator.accounts import Accounts
from coordinator.catalog import Catalog
from coordinator.changes import AgentChange, Topic
from coordinator.config import CoordinatorConfig
from coordinator.poolconfig import ProviderOptions, load_pool_config
from coordinator.pools import PoolHost, PoolManager
from coordinator.poolstate import KnownAgents, PoolBoard
from coordinator.providers.base import AgentLaunch, Provider
from coordinator.providers.local import LocalProvider
from coordinator.providers.slurm import SlurmProvider


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.replace(tmp, path)


def pool_board(config: CoordinatorConfig, catalog: Catalog, agents: KnownAgents) -> PoolBoard | None:
    """The pools `--pool-config` asks for (None: no pool), before anything starts them."""
    if config.pool_config is None:
        return None
    pool_config = load_pool_config(config.pool_config, frozenset(p.code for p in catalog.profiles))
    return PoolBoard(pool_config, catalog, agents)


async def start_pools(
    config: CoordinatorConfig,
    board: PoolBoard,
    accounts: Accounts,
    scheduler: PoolHost,
    agent_changes: Topic[AgentChange],
    catalog: Catalog,
    address: str,
) -> PoolManager:
    """Providers for the pools, and the manager that starts their agents (dialing
    `address`, the coordinator as bound)."""
    pool_config = board.config
    work_dir = config.agents_dir or config.data_dir / "agents"
    secret_file = work_dir / "provisioning-secret"
    # A provisioning secret of its own, so provider-started agents can enrol.
    _write_secret(secret_file, await accounts.create_provisioning_secret())
    launch = AgentLaunch(coordinator=address, secret_file=secret_file, work_dir=work_dir)
    providers: dict[str, Provider] = {}
    for name in pool_config.provider_names:
        options = pool_config.providers.get(name, ProviderOptions())
        if name == "local":
            providers[name] = LocalProvider(launch, options.launch_args)
        elif name == "slurm":
            providers[name] = SlurmProvider(
                launch,
                partition=options.partition,
                sbatch_args=options.sbatch_args,
                extra_agent_args=options.launch_args,
                status_interval_s=options.status_interval_s,
            )
    return PoolManager(board, providers, scheduler, agent_changes, catalog.classes)
