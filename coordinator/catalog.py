"""The hardware catalog: classes, concrete profiles, prices (coordinator/catalog.yaml),
and which profile an agent's GPUs make (agents report what they have; this decides)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from c3.errors import ConfigError
from c3.v1 import agent_pb2

CPU_PROFILE = "cpu"

# Most specific first: "A100" must not match the "A10" rule.
_CLASS_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bL40S?\b", "l40"),
    (r"\bL4\b", "l4"),
    (r"\bH200\b", "h200"),
    (r"\bH100\b", "h100"),
    (r"\bGH200\b", "gh200"),
    (r"\bB200\b", "b200"),
    (r"\bA100\b", "a100"),
    (r"\bA10G?\b", "a10"),
    (r"\bA40\b", "a40"),
    (r"\bA6000\b", "a6000"),
    (r"\bV100\b", "v100"),
    (r"\bT4\b", "t4"),
    (r"\bRTX\s*(\d{4})\b", "rtx{0}"),
)


def gpu_class_of(model: str) -> str:
    """The catalog class of a GPU model name ("NVIDIA L40S" -> "l40")."""
    for pattern, cls in _CLASS_PATTERNS:
        match = re.search(pattern, model, re.IGNORECASE)
        if match:
            return cls.format(*match.groups())
    # Unknown model: a stable, readable code from its name.
    words = re.sub(r"^(nvidia|tesla|geforce)\s+", "", model.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "", words.lower()) or "gpu"


@dataclass(frozen=True)
class Profile:
    code: str
    gpu_class: str
    gpu_name: str
    gpu_count: int
    vram_gb: int
    price_per_hour_minor: int
    cpu_per_gpu: int
    ram_gb_per_gpu: int
    disk_gb_per_gpu: int
    providers: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    currency: str
    profiles: tuple[Profile, ...]
    # Billing looks a profile up on every job start and end: a dict, not a scan.
    _by_code: dict[str, Profile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {p.code: p for p in reversed(self.profiles)})

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(p.gpu_class for p in self.profiles)

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(name for p in self.profiles for name in p.providers)

    def profile(self, code: str) -> Profile | None:
        return self._by_code.get(code)

    def profile_for(self, gpu_class: str, gpu_count: int) -> str:
        """The profile code of `gpu_count` GPUs of a class ("l40", 4 -> "l40s-4x"), or
        `<class>-<count>x` when the catalog has none; no GPU: the cpu profile."""
        if not gpu_count:
            return CPU_PROFILE
        for p in self.profiles:
            if p.gpu_class == gpu_class and p.gpu_count == gpu_count:
                return p.code
        return f"{gpu_class}-{gpu_count}x"

    def classify(self, caps: agent_pb2.AgentCapabilities) -> agent_pb2.AgentCapabilities:
        """An agent's capabilities with its class and profile decided from the GPUs it
        reports; a profile or class the agent names itself stands."""
        decided = agent_pb2.AgentCapabilities()
        decided.CopyFrom(caps)
        if not decided.gpu_class:
            decided.gpu_class = gpu_class_of(caps.gpu_model) if caps.gpu_count else CPU_PROFILE
        if not decided.profile:
            decided.profile = self.profile_for(decided.gpu_class, caps.gpu_count)
        return decided

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        if path is None:
            text = resources.files("coordinator").joinpath("catalog.yaml").read_text()
            where = "coordinator/catalog.yaml"
        else:
            text, where = path.read_text(), str(path)
        try:
            raw = yaml.safe_load(text)
            profiles = []
            for class_name, spec in raw["classes"].items():
                for p in spec["profiles"]:
                    profiles.append(
                        Profile(
                            code=str(p["code"]),
                            gpu_class=str(class_name),
                            gpu_name=str(spec["gpu_name"]),
                            gpu_count=int(p["gpu_count"]),
                            vram_gb=int(spec["vram_gb"]),
                            price_per_hour_minor=int(p["price_per_hour_minor"]),
                            cpu_per_gpu=int(spec["cpu_per_gpu"]),
                            ram_gb_per_gpu=int(spec["ram_gb_per_gpu"]),
                            disk_gb_per_gpu=int(spec["disk_gb_per_gpu"]),
                            providers=tuple(spec.get("providers", ("local",))),
                        )
                    )
            return cls(str(raw.get("currency", "GBP")), tuple(profiles))
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where}: invalid hardware catalog: {exc}") from exc
