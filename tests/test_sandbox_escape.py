"""A job tries to break out, as an attacker would, and every try fails.

One hostile job runs through a real stack (coordinator, storaged, a real `c3-agent` with
its default sandbox: unprivileged, capability-free, seccomp, a network namespace of its
own with `job_network: egress`). It runs tests/sandbox_escape_probe.py, which makes 39
escape attempts and reports each; every one must be blocked. The targets are real: decoy
servers this test binds on the host's loopback, on all its addresses (v4 and v6) and as
an abstract unix socket; the coordinator's and storaged's own ports; the agent's pid,
data dir and credential; another job's workspace (an earlier job's kept tree, with a
marker) and another job's listener (a second sandbox running meanwhile). No traffic is
sent to an address off this machine: the metadata and gateway tries are rejected inside
the job's namespace before anything leaves it, and the control test (no filter) only
probes this host's own addresses.

Separately: a job that daemonises (`setsid nohup sleep &`) leaves nothing after cancel
or after it exits; a job given GPU 1 of a (faked) four-GPU host sees only its node.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.jobnet import JobNetwork, NetnsPool, host_addresses, missing_tools
from agent.logbatch import LogBatcher
from agent.runner import Ending, ScriptRun
from agent.sandbox import JobLayout, LaunchSpec
from c3.grpcutil import bearer
from c3.v1 import agent_pb2, common_pb2
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import push_tree, push_workspace, start_agent_stack, submit_and_wait
from tests.harness.sandbox import host_sandbox
from tests.harness.waiting import eventually

S = common_pb2
PROBE = Path(__file__).with_name("sandbox_escape_probe.py")
ATTEMPTS = (
    "read_etc_shadow", "host_users_in_etc_passwd", "read_agent_credential",
    "list_agent_data_dir", "find_another_jobs_workspace", "host_path_in_proc_1_cmdline",
    "host_path_in_mountinfo", "become_root", "hold_a_capability", "setuid_binary_gains_root",
    "mount_tmpfs", "mknod_block_device", "new_user_namespace", "ptrace_the_agent",
    "see_host_processes", "write_system_dirs", "write_host_tmp", "connect_coordinator",
    "connect_storaged", "connect_loopback_decoy", "connect_host_address_decoy",
    "connect_host_ipv6_decoy", "connect_through_the_gateway", "connect_cloud_metadata",
    "connect_abstract_unix_decoy", "vsock_to_the_hypervisor", "raw_packet_socket",
    "turn_off_the_firewall", "kernel_keyring", "load_bpf", "perf_userfaultfd_io_uring",
    "load_kernel_module", "open_by_handle_shocker", "read_kernel_log",
    "container_engine_socket", "agent_secrets_in_environment", "inherited_file_descriptors",
    "reach_another_job", "open_unassigned_gpu",
)  # fmt: skip
OTHER_JOB_PORT = 47_123

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the escape suite runs as root (as in CI)"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe uses x86_64 numbers"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (scripts/bootstrap)"),
]


class Decoy:
    """A TCP (or abstract unix) server on the host that records every connection."""

    def __init__(self, family: int, address: tuple[str, int] | str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(address)
        self.sock.listen(16)
        self.accepted: list[object] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.sendall(b"DECOY\n")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def decoys() -> Iterator[dict[str, Decoy]]:
    made = {"loopback": Decoy(socket.AF_INET, ("127.0.0.1", 0)),
            "any": Decoy(socket.AF_INET, ("0.0.0.0", 0)),
            "v6": Decoy(socket.AF_INET6, ("::", 0)),
            "abstract": Decoy(socket.AF_UNIX, f"\0c3-decoy-{secrets.token_hex(6)}")}
    yield made
    for decoy in made.values():
        decoy.close()


async def _other_job(tmp_path: Path, started: asyncio.Event, stop: asyncio.Event) -> None:
    """Another tenant's job: a sandbox with a network namespace of its own, listening on
    OTHER_JOB_PORT on every address until `stop`."""
    policy = host_sandbox()
    assert policy is not None
    pool = NetnsPool(f"o{secrets.token_hex(4)}")
    ns = await pool.take()
    layout = JobLayout.under(tmp_path / "other" / "j-other")
    layout.create()
    (layout.workspace / "run.sh").write_text(
        "exec python3 -c \"import socket,time\n"
        "s=socket.socket(socket.AF_INET6); s.setsockopt(41, 26, 0)\n"
        f"s.bind(('::', {OTHER_JOB_PORT})); s.listen(); print('listening', flush=True)\n"
        "while True:\n c,_=s.accept(); c.sendall(b'OTHER JOB'); c.close()\"\n")
    seen: list[str] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        seen.extend(line.text for line in batch.lines)
        if "listening" in seen:
            started.set()

    logs = LogBatcher("other", send)
    logs.start()
    run = ScriptRun(LaunchSpec(layout=layout, script="run.sh", netns=ns.name),
                    sandbox=replace(policy, network=JobNetwork.EGRESS), logs=logs,
                    grace_seconds=1)
    await run.start()
    waiter = asyncio.create_task(run.wait())
    try:
        await stop.wait()
    finally:
        run.stop()
        await waiter
        await logs.close()
        await pool.release(ns)
        await pool.close()


@pytest.fixture(scope="module")
def escape_results(tmp_path_factory: pytest.TempPathFactory,
                   decoys: dict[str, Decoy]) -> dict[str, object]:
    return asyncio.run(_escape(tmp_path_factory.mktemp("escape"), decoys))


async def _escape(tmp: Path, decoys: dict[str, Decoy]) -> dict[str, object]:
    marker = f"other-tenant-secret-{secrets.token_hex(8)}"
    canary = f"c3-escape-canary-{secrets.token_hex(6)}"
    started, stop = asyncio.Event(), asyncio.Event()
    other = asyncio.create_task(_other_job(tmp, started, stop))
    try:
        async with start_agent_stack(tmp) as stack:
            await asyncio.wait_for(started.wait(), 30)
            # Another tenant's job first: its workspace stays on the agent for its next job.
            alpha = tmp / "alpha"
            alpha.mkdir()
            (alpha / "secret.txt").write_text(marker)
            (alpha / "run.sh").write_text('cat secret.txt > "$C3_ARTIFACTS_DIR/copy.txt"\n')
            done, _ = await submit_and_wait(stack, project="alpha", script="run.sh",
                                            workspace_manifest_digest=await push_workspace(stack, alpha))
            assert done.state == S.JOB_STATE_COMPLETED, done.message
            hosts = await host_addresses()
            data_dir = stack.agent_dir
            targets = {
                "credential": str(data_dir / "agent-credential.json"), "data_dir": str(data_dir),
                "host_paths": [str(data_dir), str(tmp)], "marker": marker,
                "agent_pid": stack.agent.pid, "host_tmp_canary": canary,
                "coordinator_port": int(stack.address.rsplit(":", 1)[1]),
                "storage_port": int(stack.storage_address.rsplit(":", 1)[1]),
                "loopback_port": decoys["loopback"].port, "any_port": decoys["any"].port,
                "v6_port": decoys["v6"].port, "abstract_name": decoys["abstract"].sock.getsockname()[1:].decode(),
                "host_v4": [a for a in hosts.v4 if not a.startswith("127.")],
                "host_v6": [a for a in hosts.v6 if a != "::1" and not a.startswith("fe80")],
                "other_job_port": OTHER_JOB_PORT,
            }  # fmt: skip
            assert (data_dir / "agent-credential.json").exists()
            beta = tmp / "beta"
            beta.mkdir()
            (beta / "escape.py").write_text(PROBE.read_text())
            (beta / "targets.json").write_text(json.dumps(targets))
            (beta / "run.sh").write_text("python3 escape.py\n")
            job, events = await submit_and_wait(stack, project="beta", script="run.sh",
                                                workspace_manifest_digest=await push_workspace(stack, beta))
            lines = [e.log.text for e in events if e.HasField("log")]
    finally:
        stop.set()
        await other
    return {"job": job, "lines": lines, "canary": canary, "decoys": decoys}


def _result(results: dict[str, object], name: str) -> str:
    lines = [ln for ln in results["lines"] if ln.startswith(f"ESCAPE {name} ")]  # type: ignore[attr-defined]
    assert lines, f"the probe did not report {name}: {results['lines']}"
    return str(lines[0])


def test_the_escape_job_ran_every_attempt(escape_results: dict[str, object]) -> None:
    job = escape_results["job"]
    assert job.state == S.JOB_STATE_COMPLETED, (job.message, escape_results["lines"])  # type: ignore[attr-defined]
    assert "ESCAPES DONE" in escape_results["lines"]  # type: ignore[operator]
    reported = {ln.split()[1] for ln in escape_results["lines"] if ln.startswith("ESCAPE ")}  # type: ignore[attr-defined]
    assert reported == set(ATTEMPTS) and len(ATTEMPTS) >= 25


@pytest.mark.parametrize("name", ATTEMPTS)
def test_escape_is_blocked(escape_results: dict[str, object], name: str) -> None:
    line = _result(escape_results, name)
    assert line.split()[2] == "blocked", line  # ESCAPED, or ERROR: a broken try


def test_no_decoy_was_reached_and_nothing_landed_on_the_host(
        escape_results: dict[str, object]) -> None:
    for name, decoy in escape_results["decoys"].items():  # type: ignore[attr-defined]
        assert decoy.accepted == [], name
    assert not (Path("/tmp") / str(escape_results["canary"])).exists()
    # The decoys do answer this host: the job's failures are the sandbox's doing.
    with socket.create_connection(("127.0.0.1", escape_results["decoys"]["loopback"].port), 5):  # type: ignore[index]
        pass


async def test_without_the_filter_a_host_address_decoy_is_reachable(
        tmp_path: Path, decoys: dict[str, Decoy]) -> None:
    """Control: the same namespace and pasta, but no nftables rules. The host's own
    address decoy answers, so the escape tests above would catch a missing filter."""
    from agent import jobnet

    hosts = [a for a in (await host_addresses()).v4 if not a.startswith("127.")]
    if not hosts:
        pytest.skip("this host has no non-loopback IPv4 address")
    name = f"c3-ctl{secrets.token_hex(4)}"
    await jobnet._run("ip", "netns", "add", name)
    try:
        await jobnet._run("ip", "-n", name, "link", "set", "lo", "up")
        await jobnet._run(*jobnet.pasta_argv(name, await host_addresses()))
        probe = (f"import socket; s=socket.create_connection(('{hosts[0]}', {decoys['any'].port}),"
                 " 5); print(s.recv(16))")
        out = await jobnet._run("nsenter", f"--net=/run/netns/{name}", "python3", "-c", probe)
        assert "DECOY" in out
    finally:
        await jobnet._run("ip", "netns", "delete", name)


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("how", ["cancel", "exit"])
async def test_a_daemonised_child_does_not_survive_the_job(tmp_path: Path, how: str) -> None:
    token = f"{secrets.randbelow(10**6) + 1000}.{secrets.randbelow(900) + 100}"
    script = (f"setsid nohup sleep {token} >/dev/null 2>&1 &\n"
              f"(setsid sh -c 'sleep {token}' &) \n"
              "echo daemonised\n" + ("sleep 300\n" if how == "cancel" else "exit 0\n"))
    async with start_agent_stack(tmp_path) as stack:
        ws = tmp_path / "ws"
        ws.mkdir()
        (ws / "run.sh").write_text(script)
        digest = await push_workspace(stack, ws)
        c, md = stack.c, stack.md
        job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
            project="demo", script="run.sh", workspace_manifest_digest=digest)),
            metadata=md)).job
        if how == "cancel":
            await eventually(lambda: len(_processes_with(token)) >= 2, 30, "the daemons to start")
            await c.CancelJob(pb.CancelJobRequest(job_ids=[job.id]), metadata=md)
        await eventually(lambda: stack.app.jobs.jobs[job.id].state in (
            S.JOB_STATE_CANCELED, S.JOB_STATE_COMPLETED), 30, "the job to end")
        await eventually(lambda: not _processes_with(token), 10,
                         "every process the job started to be gone")


async def test_a_job_given_one_gpu_of_four_sees_only_that_node(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The GPU device nodes are faked (no GPU here): a temp dir stands in for /dev with
    nvidia0-3 and the shared control nodes, injected as the sandbox's dev root."""
    policy = host_sandbox()
    if policy is None:
        pytest.skip("bubblewrap cannot run on this host")
    # Outside pytest's 0700 tmp dirs: bubblewrap runs as the job's own host uid and must
    # reach the nodes, as it reaches the real /dev.
    dev = Path(tempfile.mkdtemp(prefix="c3-fake-dev-"))
    dev.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(dev, True))
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm",
                 "nvidia-uvm-tools", "nvidia-modeset", "dri"):
        (dev / name).write_text(name)
        (dev / name).chmod(0o666)
    layout = JobLayout.under(tmp_path / "job")
    layout.create()
    (layout.workspace / "run.sh").write_text(
        'ls /dev | grep -E "nvidia|dri" | tr "\\n" " "; echo\n'
        "cat /dev/nvidia1; echo\n"
        "for n in 0 2 3; do cat /dev/nvidia$n 2>/dev/null && echo OPENED-$n; done\n"
        'echo "cuda=$CUDA_VISIBLE_DEVICES"\n')
    lines: list[str] = []

    async def send(batch: agent_pb2.LogBatch) -> None:
        lines.extend(line.text for line in batch.lines)

    logs = LogBatcher("gpu", send)
    logs.start()
    run = ScriptRun(LaunchSpec(layout=layout, script="run.sh", cuda_visible_devices="1"),
                    sandbox=replace(policy, dev_root=dev, proc_root=tmp_path / "noproc"),
                    logs=logs)
    await run.start()
    result = await run.wait()
    await logs.close()
    assert result.ending is Ending.EXITED and result.exit_code == 0, lines
    assert lines[0].split() == ["nvidia-modeset", "nvidia-uvm", "nvidia-uvm-tools", "nvidia1",
                                "nvidiactl"]
    assert "nvidia1" in lines and not any(ln.startswith("OPENED") for ln in lines)
    assert "cuda=1" in lines


async def test_another_org_never_gets_a_network_namespace_an_earlier_orgs_job_used(
        tmp_path: Path) -> None:
    async with start_agent_stack(tmp_path) as stack:
        _, rival_key = await stack.app.accounts.create_org_with_admin("rival", "free")
        ws = tmp_path / "ws"
        ws.mkdir()
        (ws / "run.sh").write_text("readlink /proc/self/ns/net\n")

        async def namespace(key: str) -> str:
            c, md = stack.c, bearer(key)
            digest = await push_tree(stack.channel, key, ws)  # each org its own blobs
            job = (await c.SubmitJob(pb.SubmitJobRequest(spec=S.JobSpec(
                project="demo", script="run.sh", workspace_manifest_digest=digest)),
                metadata=md)).job
            await eventually(lambda: stack.app.jobs.jobs[job.id].state
                             in (S.JOB_STATE_COMPLETED, S.JOB_STATE_FAILED), 60, "the job to end")
            assert stack.app.jobs.jobs[job.id].state == S.JOB_STATE_COMPLETED, \
                stack.app.jobs.jobs[job.id].message
            events = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id), metadata=md)
            async for event in events:
                if event.HasField("log") and event.log.text.startswith("net:"):
                    return str(event.log.text)
            raise AssertionError("the job printed no namespace")

        first = await namespace(stack.api_key)
        assert await namespace(stack.api_key) == first  # the same org's redeploy: kept
        rival = await namespace(rival_key)
        assert rival != first  # another org: a namespace no earlier job used
        # Back to the first org: not the rival's. (Not compared with `first`: the kernel
        # may give a later namespace the number of one deleted meanwhile.)
        assert await namespace(stack.api_key) != rival
