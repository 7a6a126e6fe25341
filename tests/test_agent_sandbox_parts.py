"""The sandbox's parts on their own: the seccomp filter's numbers against the kernel
headers and its effect in a real sandbox; the nftables ruleset of a job namespace; the
synthesised /etc; the GPU node choice (faked /dev and /proc, no GPU here); artifact
collection from lstat alone; staged mounts a killed agent left are swept."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from agent import artifacts, jobetc, seccomp
from agent.artifacts import ArtifactLimits, collect, survey
from agent.devices import gpu_minors, gpu_nodes
from agent.jobnet import HostAddresses, JobNetwork, parse_ip_addr, pasta_argv, ruleset
from agent.logbatch import LogBatcher
from agent.runner import run_script
from agent.sandbox import JobLayout, LaunchSpec, bwrap_argv
from agent.stage import Stage, StagedDir, sweep
from c3.v1 import agent_pb2
from tests.harness.sandbox import host_sandbox

HEADERS = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
           "aarch64": Path("/usr/include/asm-generic/unistd.h")}


@pytest.mark.unit
@pytest.mark.parametrize("arch", [seccomp.X86_64, seccomp.AARCH64], ids=lambda a: a.name)
def test_seccomp_numbers_match_the_kernel_headers(arch: seccomp.Arch) -> None:
    header = HEADERS[arch.name]
    if not header.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = dict(re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text()))
    for name, number in arch.numbers.items():
        assert int(defined[name]) == number, name
    # Every call the filter names exists on the architecture, or is knowingly absent.
    absent = {n for n in (*seccomp.DENIED, *seccomp.NOT_IMPLEMENTED) if n not in arch.numbers}
    assert absent <= {"create_module", "get_kernel_syms", "query_module", "iopl", "ioperm",
                      "uselib", "_sysctl", "ustat", "sysfs"}
    assert not absent & set(defined)
    program = seccomp.build_filter(arch)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096


@pytest.mark.integration
async def test_seccomp_refuses_the_listed_calls_in_a_real_sandbox(tmp_path: Path) -> None:
    policy = host_sandbox()
    if policy is None or policy.seccomp is None:
        pytest.skip("no sandbox with seccomp here")
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    (layout.workspace / "calls.py").write_text(
        "import ctypes, os, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for name, nr in [('keyctl', 250), ('bpf', 321), ('unshare', 272), ('setns', 308),\n"
        "                 ('clone3', 435), ('io_uring_setup', 425), ('add_key', 248)]:\n"
        "    r = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
        "    print(name, r, os.strerror(ctypes.get_errno()))\n"
        "print('spawn', subprocess.run(['true']).returncode)  # clone without CLONE_NEW*\n")
    (layout.workspace / "run.sh").write_text("python3 calls.py\n")
    lines: list[str] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        lines.extend(line.text for line in batch.lines)

    logs = LogBatcher("s", send)
    logs.start()
    result = await run_script(LaunchSpec(layout=layout, script="run.sh"), sandbox=policy, logs=logs)
    await logs.close()
    assert result.exit_code == 0, lines
    said = {line.split()[0]: line for line in lines}
    for name in ("keyctl", "bpf", "unshare", "setns", "add_key"):
        assert said[name].endswith("-1 Operation not permitted"), said[name]
    for name in ("clone3", "io_uring_setup"):  # libraries fall back
        assert said[name].endswith("-1 Function not implemented"), said[name]
    assert said["spawn"] == "spawn 0"


@pytest.mark.unit
def test_the_namespace_filter_rejects_the_host_and_metadata_but_forwards_dns() -> None:
    rules = ruleset(HostAddresses(("10.1.2.3", "127.0.0.1"), ("2001:db8::5", "fe80::1"), True))
    assert 'oifname "lo" accept' in rules
    assert "ip daddr 198.18.0.1 udp dport 53 accept" in rules
    v4 = re.findall(r"ip daddr \{ ([^}]*) \}", rules)[0]
    for blocked in ("127.0.0.0/8", "169.254.0.0/16", "10.1.2.3", "198.18.0.1", "168.63.129.16",
                    "100.100.100.200", "0.0.0.0/8"):
        assert blocked in v4, blocked
    v6 = re.findall(r"ip6 daddr \{ ([^}]*) \}", rules)[0]
    for blocked in ("::1", "2001:db8::5", "fd00:ec2::254", "fd00:c3::1"):
        assert blocked in v6, blocked
    assert "ip6 daddr fe80::/10 meta l4proto tcp reject" in rules
    # The accept for DNS comes before the gateway's reject.
    assert rules.index("udp dport 53 accept") < rules.index(v4)
    argv = pasta_argv("c3-x-1-1", HostAddresses((), (), False))
    for pair in (("-T", "none"), ("-U", "none"), ("-t", "none"), ("-u", "none")):
        assert any(argv[i:i + 2] == list(pair) for i in range(len(argv))), pair
    assert "--no-map-gw" in argv and "--ipv4-only" in argv


@pytest.mark.unit
def test_host_addresses_come_from_ip_json() -> None:
    text = json.dumps([
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"},
                                       {"family": "inet6", "local": "::1"}]},
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2"},
                                         {"family": "inet6", "local": "fd00::2"}]},
        {"ifname": "docker0", "addr_info": [{"family": "inet", "local": "172.17.0.1"}]}])
    assert parse_ip_addr(text) == (["127.0.0.1", "192.0.2.2", "172.17.0.1"], ["::1", "fd00::2"])
    assert JobNetwork.parse("EGRESS") is JobNetwork.EGRESS
    with pytest.raises(ValueError, match="use none or egress"):
        JobNetwork.parse("host")


@pytest.mark.unit
def test_the_jobs_etc_is_written_for_it_and_never_the_hosts_secrets(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ssl" / "certs").mkdir(parents=True)
    (etc / "ssl" / "private").mkdir()
    for name in ("shadow", "sudoers", "ld.so.cache", "passwd", "gitconfig", "pip.conf"):
        (etc / name).write_text("host\n")
    entries = {e.target: e for e in jobetc.job_etc("198.18.0.1", etc)}
    assert b"c3:x:1000:1000" in entries["/etc/passwd"].data
    assert entries["/etc/resolv.conf"].data.startswith(b"nameserver 198.18.0.1")
    assert entries["/etc/ld.so.cache"].host == etc / "ld.so.cache"
    assert entries["/etc/ssl/certs"].host == etc / "ssl" / "certs"
    for secret in ("/etc/shadow", "/etc/sudoers", "/etc/ssl/private", "/etc/ssl",
                   "/etc/gitconfig", "/etc/pip.conf"):
        assert secret not in entries, secret
    assert entries["/etc/passwd"].host is None  # written for the job, not the host's
    assert b"nameserver" not in dict((e.target, e) for e in jobetc.job_etc("", etc))[
        "/etc/resolv.conf"].data


@pytest.mark.unit
def test_gpu_nodes_are_the_assigned_ones_by_device_minor(tmp_path: Path) -> None:
    """Fakes (no GPU here): plain files stand in for /dev/nvidia*, and the driver's
    /proc/driver/nvidia/gpus/<bus>/information files give the minors."""
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    assert gpu_nodes([2], dev, proc) == [
        (dev / "nvidia2", "/dev/nvidia2"), (dev / "nvidiactl", "/dev/nvidiactl"),
        (dev / "nvidia-uvm", "/dev/nvidia-uvm")]
    # The driver numbers nodes its own way: index 0 (first bus id) is minor 3.
    for bus, minor in (("0000:17:00.0", 3), ("0000:65:00.0", 0)):
        (proc / "driver/nvidia/gpus" / bus).mkdir(parents=True)
        (proc / "driver/nvidia/gpus" / bus / "information").write_text(
            f"Model: NVIDIA L40S\nDevice Minor: {minor}\n")
    assert gpu_minors([0, 1], proc) == [3, 0]
    assert next(t for _, t in gpu_nodes([0], dev, proc)) == "/dev/nvidia3"


@pytest.mark.integration
def test_the_job_command_line_names_no_host_path(tmp_path: Path) -> None:
    policy = host_sandbox()
    if policy is None:
        pytest.skip("bubblewrap cannot run on this host")
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    argv, fds = bwrap_argv(LaunchSpec(layout=layout, script="run.sh"), policy,
                           ["/bin/bash", "/workspace/run.sh"])
    try:
        bwrap_at = next(i for i, a in enumerate(argv) if a.endswith("bwrap"))
        assert argv[bwrap_at + 1] == "--args"
        assert str(tmp_path) not in " ".join(argv[bwrap_at:])  # what /proc/1/cmdline shows
        data = os.pread(int(argv[bwrap_at + 2]), 1 << 20, 0).decode()
        assert "--unshare-user" in data and "--cap-drop" in data and "--disable-userns" in data
    finally:
        for fd in fds:
            os.close(fd)


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("bb")
    os.mkfifo(root / "fifo")
    (root / "loop").symlink_to(".")
    (root / "out").symlink_to("/etc/passwd")
    (root / "in").symlink_to("a.txt")
    (root / "bad\nname").write_text("x")


@pytest.mark.unit
def test_collection_decides_from_lstat_and_reads_only_what_it_keeps(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    _tree(root)
    with open(root / "huge.bin", "wb") as f:
        f.truncate(1 << 40)  # sparse: nothing on disk
    found, notes, refused = survey([(root, "")], (root,), ArtifactLimits(max_file_bytes=1 << 30))
    assert sorted(f.relative for f in found) == ["a.txt", "in", "sub/b.txt"]
    assert any(n.startswith("huge.bin: 1.0 TiB, over the per-file limit of 1.0 GiB") for n in notes)
    assert refused and "huge.bin" in refused[0]
    for fragment in ("fifo: a FIFO", "loop: directory symlink", "out: symlink points outside",
                     "bad\\nname: control characters"):
        assert any(fragment in n for n in notes), (fragment, notes)
    assert collect([(root, "")], (root,), ArtifactLimits(max_file_bytes=1 << 30)).files == ()
    (root / "huge.bin").unlink()
    kept = collect([(root, "")], (root,))
    assert {f.relative: f.size for f in kept.files} == {"a.txt": 1, "in": 1, "sub/b.txt": 2}
    assert not kept.refused


@pytest.mark.unit
def test_collection_stops_counting_at_the_file_limit(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    for i in range(50):
        (root / f"{i:03d}").touch()
    found, _, refused = survey([(root, "")], (root,), ArtifactLimits(max_files=10))
    assert len(found) == 10 and "more than 10 artifact files" in refused[0]


@pytest.mark.unit
def test_a_stopped_collection_stops_hashing(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:
        f.truncate(8 << 30)  # sparse, ~5 s to hash
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        artifacts.collect([(root, "")], (root,), stop=stop)


@pytest.mark.unit
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_staged_mounts_a_killed_agent_left_are_swept_and_keep_their_files(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "j-1"
    (job / "workspace").mkdir(parents=True)
    (job / "workspace" / "keep.txt").write_text("mine")
    root = Path(f"/run/c3-test{os.getpid()}")
    stage = Stage.mount(root / "j-1", [StagedDir(job.parent, job.name, "job", True)])
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
        line = next(ln for ln in mounts.splitlines() if str(root / "j-1" / "job") in ln)
        assert "upperdir=/proc/self/fd/" in line and str(tmp_path) not in line
        assert (root / "j-1" / "job" / "workspace" / "keep.txt").read_text() == "mine"
    except BaseException:
        stage.unmount()
        raise
    # The agent dies here (no unmount); its next start sweeps.
    assert sweep(root) == ["j-1"]
    assert str(root) not in Path("/proc/self/mountinfo").read_text()
    assert not (root / "j-1").exists()
    assert (job / "workspace" / "keep.txt").read_text() == "mine"
    assert not root.exists()  # nothing is left in /run either


@pytest.mark.unit
def test_only_namespaces_of_agents_whose_process_is_gone_count_as_dead() -> None:
    from agent.jobnet import _of_a_dead_agent

    dead = 2**22 + 17  # above pid_max's default: no such process
    assert _of_a_dead_agent(f"c3-0123456789ab-{dead}-2")
    assert not _of_a_dead_agent(f"c3-0123456789ab-{os.getpid()}-2")  # this very agent
    assert not _of_a_dead_agent(f"c3-0123456789ab-{os.getppid()}-2")  # alive
    assert not _of_a_dead_agent(f"someone-else-{dead}-2")
