"""Providers bring agents into existence: `local` (processes on this host) and `slurm`."""

from __future__ import annotations

from coordinator.providers.base import AgentLaunch, Provider, ProvisionError
from coordinator.providers.local import LocalProvider
from coordinator.providers.slurm import SlurmProvider

__all__ = ["AgentLaunch", "LocalProvider", "Provider", "ProvisionError", "SlurmProvider"]
