"""The hardware catalog: classes, concrete profiles, prices (coordinator/catalog.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from c3.errors import ConfigError


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
