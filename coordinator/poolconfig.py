"""The warm-pool file (`--pool-config F`): per profile a baseline, a cap, an idle timeout
and the provider that makes its agents; per provider its options.

    pools:
      - profile: cpu            # a catalog profile code
        provider: local         # local | slurm
        baseline: 1             # idle agents kept warm
        cap: 4                  # most agents of this pool at once
        idle_timeout_s: 300     # extra idle agents leave after this long
        register_timeout_s: 300 # a started agent that has not registered by then failed
    providers:
      local: {agent_args: ["--allow-unsandboxed"], job_network: egress}
      slurm:
        partition: debug
        sbatch_args: ["--time=UNLIMITED"]   # #SBATCH lines of the agent's batch script
        agent_args: ["--no-cgroups"]        # extra c3-agent flags
        job_network: none                   # egress (default) | none: the agents' jobs'
                                            # network (c3-agent --job-network)
        status_interval_s: 2                # squeue while an agent starts (its state and
                                            # reason for users; an early end fails at once)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from c3.errors import ConfigError
from coordinator.providers.slurm import DEFAULT_STATUS_INTERVAL_S

KNOWN_PROVIDERS = ("local", "slurm")
_OPTIONS = {
    "local": ("agent_args", "job_network"),
    "slurm": ("agent_args", "job_network", "partition", "sbatch_args", "status_interval_s"),
}
JOB_NETWORKS = ("egress", "none")


@dataclass(frozen=True)
class PoolPolicy:
    profile: str
    provider: str
    baseline: int = 0
    cap: int = 1
    idle_timeout_s: float = 300.0
    # A provisioned agent that has not registered after this long is given up on.
    register_timeout_s: float = 300.0

    @property
    def name(self) -> str:
        return self.profile if self.provider == "local" else f"{self.provider}-{self.profile}"


@dataclass(frozen=True)
class ProviderOptions:
    agent_args: tuple[str, ...] = ()
    partition: str = ""
    sbatch_args: tuple[str, ...] = ()
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S
    job_network: str = ""  # "": the agent's default (egress)

    @property
    def launch_args(self) -> tuple[str, ...]:
        """The extra c3-agent flags of this provider's agents."""
        network = ("--job-network", self.job_network) if self.job_network else ()
        return (*self.agent_args, *network)


@dataclass(frozen=True)
class PoolConfig:
    pools: tuple[PoolPolicy, ...] = ()
    providers: dict[str, ProviderOptions] = field(default_factory=dict)

    @property
    def provider_names(self) -> frozenset[str]:
        return frozenset(p.provider for p in self.pools) | frozenset(self.providers)


def load_pool_config(path: Path, profiles: frozenset[str]) -> PoolConfig:
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: cannot read pool config: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with `pools:` and `providers:`")
    providers = raw.get("providers") or {}
    if not isinstance(providers, dict):
        raise ConfigError(f"{where}: `providers` must be a mapping of name -> options")
    raw_pools = raw.get("pools") or []
    if not isinstance(raw_pools, list):
        raise ConfigError(f"{where}: `pools` must be a list, e.g. [{{profile: cpu, cap: 2}}]")
    pools = []
    for i, item in enumerate(raw_pools):
        at = f"{where}: pools[{i}]"
        if not isinstance(item, dict) or "profile" not in item:
            raise ConfigError(f"{at}: each pool needs at least `profile:`")
        try:
            policy = PoolPolicy(
                profile=str(item["profile"]),
                provider=str(item.get("provider", "local")),
                baseline=int(item.get("baseline", 0)),
                cap=int(item.get("cap", max(1, int(item.get("baseline", 0))))),
                idle_timeout_s=float(item.get("idle_timeout_s", 300)),
                register_timeout_s=float(item.get("register_timeout_s", 300)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{at}: {exc}") from exc
        if policy.profile not in profiles:
            raise ConfigError(
                f"{at}: unknown profile {policy.profile!r}; use one of {', '.join(sorted(profiles))}"
            )
        if policy.provider not in KNOWN_PROVIDERS:
            raise ConfigError(
                f"{at}: unknown provider {policy.provider!r}; use {' or '.join(KNOWN_PROVIDERS)}"
            )
        for key in ("idle_timeout_s", "register_timeout_s"):
            if not 0 < getattr(policy, key) < float("inf"):
                raise ConfigError(f"{at}.{key}: expected a number of seconds above 0")
        if policy.baseline < 0 or policy.cap < max(1, policy.baseline):
            raise ConfigError(f"{at}: need 0 <= baseline <= cap and cap >= 1")
        pools.append(policy)
    options = {}
    for name, raw_options in providers.items():
        if name not in KNOWN_PROVIDERS:
            raise ConfigError(
                f"{where}: providers.{name}: unknown provider; use {' or '.join(KNOWN_PROVIDERS)}"
            )
        options[str(name)] = _provider_options(str(name), raw_options, f"{where}: providers.{name}")
    return PoolConfig(tuple(pools), options)


def _provider_options(name: str, raw: Any, at: str) -> ProviderOptions:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: expected a mapping of options, e.g. {{agent_args: [...]}}")
    allowed = _OPTIONS[name]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{at}.{key}: unknown option for {name}; use {', '.join(allowed)}")

    def args(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(a, str | int | float) for a in value):
            raise ConfigError(f'{at}.{key}: expected a list of strings, e.g. ["--flag=value"]')
        return tuple(str(a) for a in value)

    partition = raw.get("partition", "")
    if not isinstance(partition, str):
        raise ConfigError(f"{at}.partition: expected a partition name")
    network = raw.get("job_network", "")
    if network != "" and network not in JOB_NETWORKS:
        raise ConfigError(f"{at}.job_network: expected {' or '.join(JOB_NETWORKS)}, "
                          f"not {network!r}")
    interval = raw.get("status_interval_s", DEFAULT_STATUS_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < float("inf"):
        raise ConfigError(f"{at}.status_interval_s: expected a number of seconds above 0")
    return ProviderOptions(
        agent_args=args("agent_args"), partition=partition,
        sbatch_args=args("sbatch_args"), status_interval_s=float(interval),
        job_network=str(network),
    )  # fmt: skip
