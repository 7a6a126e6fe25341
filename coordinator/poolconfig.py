"""The warm-pool file (`--pool-config F`): per profile a baseline, a cap, an idle timeout
and the provider that makes its agents; per provider its options.

    pools:
      - profile: cpu            # a catalog profile code
        provider: local         # local | slurm
        baseline: 1             # idle agents kept warm
        cap: 4                  # most agents of this pool at once
        idle_timeout_s: 300     # extra idle agents leave after this long
    providers:
      local: {agent_args: ["--allow-unsandboxed"]}
      slurm: {partition: debug, sbatch_args: ["--time=UNLIMITED"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from c3.errors import ConfigError

KNOWN_PROVIDERS = ("local", "slurm")


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
class PoolConfig:
    pools: tuple[PoolPolicy, ...] = ()
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    pools = []
    for i, item in enumerate(raw.get("pools") or []):
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
        if policy.baseline < 0 or policy.cap < max(1, policy.baseline):
            raise ConfigError(f"{at}: need 0 <= baseline <= cap and cap >= 1")
        pools.append(policy)
    for name in providers:
        if name not in KNOWN_PROVIDERS:
            raise ConfigError(f"{where}: providers.{name}: unknown provider")
    return PoolConfig(tuple(pools), {str(k): dict(v or {}) for k, v in providers.items()})
