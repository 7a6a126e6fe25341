"""Host discovery, and the profile the coordinator decides from what an agent reports. No
test machine has a GPU, so these tests put a fake `nvidia-smi` script first on PATH that
prints what the real one prints for the same query."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.discovery import HostInfo, discover
from agent.sandbox import check_mount_target
from c3.errors import InvalidArgument
from c3.v1 import agent_pb2
from coordinator.catalog import Catalog, gpu_class_of


def decided(host: HostInfo) -> agent_pb2.AgentCapabilities:
    """What the coordinator makes of the GPUs the agent reports."""
    reported = agent_pb2.AgentCapabilities(gpu_model=host.gpu_model, gpu_count=host.gpu_count)
    return Catalog.load().classify(reported)

pytestmark = pytest.mark.unit


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


async def test_four_l40s_map_to_the_catalog_profile(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, """
case "$*" in *--query-gpu=name,memory.total*--format=csv,noheader*) ;; *) exit 2;; esac
for i in 0 1 2 3; do echo "NVIDIA L40S, 46068 MiB"; done
""")
    host = await discover()
    caps = decided(host)
    assert (caps.gpu_class, caps.profile, caps.gpu_count) == ("l40", "l40s-4x", 4)
    assert (host.gpu_model, host.gpu_memory_mib) == ("NVIDIA L40S", 46068)
    assert host.gpus[0].memory_mib == 46068
    assert host.cuda_visible_devices == "0,1,2,3"
    two = await discover([1, 2])
    assert (decided(two).profile, two.cuda_visible_devices) == ("l40s-2x", "1,2")
    with pytest.raises(ValueError, match="GPU index 7"):
        await discover([7])


async def test_no_or_broken_nvidia_smi_offers_cpu(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    host = await discover()
    caps = decided(host)
    assert (caps.profile, caps.gpu_class, host.gpu_count, host.cuda_visible_devices) == (
        "cpu", "cpu", 0, "")
    fake_nvidia_smi(tmp_path, monkeypatch, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert decided(await discover()).profile == "cpu"


def test_a_profile_the_agent_names_stands() -> None:
    named = agent_pb2.AgentCapabilities(profile="l40s-1x", gpu_class="l40", gpu_count=1)
    assert Catalog.load().classify(named) == named
    unknown = agent_pb2.AgentCapabilities(gpu_model="NVIDIA Quadro GV100", gpu_count=2)
    assert Catalog.load().classify(unknown).profile == "quadrogv100-2x"


def test_gpu_names_to_classes() -> None:
    assert gpu_class_of("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_class_of("NVIDIA A10G") == "a10"
    assert gpu_class_of("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_class_of("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert gpu_class_of("Tesla T4") == "t4"


@pytest.mark.parametrize("bad", ["/", "/usr/share/x", "/proc", "/workspace/data", "data",
                                 "/data/../etc", "/tmp/x", "/c3/artifacts"])
def test_dataset_mounts_over_system_or_job_dirs_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="dataset mount"):
        check_mount_target(bad)
    assert check_mount_target("/data/imagenet") == "/data/imagenet"
