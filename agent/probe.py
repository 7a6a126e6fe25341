"""Choosing, at agent start, the strongest sandbox this host can run — by trying it.

A root agent tries, in order: bubblewrap as an unprivileged host uid of its own with the
job's dirs staged through overlays (nothing of the host's paths visible), then bubblewrap
as root (the job is still uid 1000 without capabilities, but the host sees uid 0 and
mountinfo shows the job dir's path). A non-root agent (a Slurm job, say) runs bubblewrap
as itself. Each step that fails is logged with its reason. `egress` needs root, nft,
pasta and ip; without them jobs get no network and the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from agent.jobnet import JobNetwork, NetnsPool, missing_tools
from agent.sandbox import (
    BWRAP,
    SYSTEM_PATH,
    JobLayout,
    LaunchSpec,
    SandboxPolicy,
    Tools,
    job_host_ids,
    launch_argv,
    stage_mounts,
)
from agent.seccomp import build_filter, this_arch
from agent.stage import stage_root, sweep

log = logging.getLogger(__name__)

TRIAL_SCRIPT = 'test -w /workspace && test -w /tmp && test "$(id -u)" = 1000\n'
TRIAL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SandboxChoice:
    policy: SandboxPolicy | None
    problem: str = ""  # why there is no sandbox (policy None)
    network_problem: str = ""  # why jobs get no network although egress was asked for
    netpool: NetnsPool | None = None


async def trial(policy: SandboxPolicy, netns: str = "", work: Path | None = None) -> str | None:
    """None when a trial job runs in `policy`, else why not."""
    with tempfile.TemporaryDirectory(prefix="c3-sandbox-probe-", dir=work) as tmp:
        layout = JobLayout.under(Path(tmp) / "trial")
        layout.create()
        (layout.workspace / "probe.sh").write_text(TRIAL_SCRIPT)
        if policy.host_ids is not None:
            for path in (layout.root, layout.workspace, layout.artifacts, layout.tmp,
                         layout.workspace / "probe.sh"):
                os.chown(path, *policy.host_ids)
        spec = LaunchSpec(layout=layout, script="probe.sh", netns=netns)
        try:
            launch = launch_argv(spec, policy)
        except (OSError, ValueError) as exc:
            return f"trial sandbox could not be prepared: {exc}"
        try:
            staged = stage_mounts(spec, policy)
        except OSError as exc:
            launch.close()
            return f"trial sandbox could not be staged: {exc}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv, cwd=launch.cwd, env={"PATH": SYSTEM_PATH},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                pass_fds=launch.fds)
            _, err = await asyncio.wait_for(proc.communicate(), TRIAL_TIMEOUT_S)
        except OSError as exc:
            return f"bubblewrap trial run failed: {exc}"
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "bubblewrap trial run did not finish"
        finally:
            launch.close()
            if staged is not None:
                staged.unmount()
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()
            return f"bubblewrap trial run failed: {text or f'exit {proc.returncode}'}"
    return None


async def choose_sandbox(data_dir: Path, network: JobNetwork, key: str,
                         dev_root: Path = Path("/dev")) -> SandboxChoice:
    """The sandbox (and, for egress, the namespace pool) jobs on this agent get."""
    if not os.access(BWRAP, os.X_OK):
        return SandboxChoice(None, f"{BWRAP} is not installed (apt-get install bubblewrap)")
    arch = this_arch()
    if arch is None:
        log.warning("no seccomp filter for this CPU architecture; jobs run without one")
    base = SandboxPolicy(seccomp=build_filter(arch) if arch else None, dev_root=dev_root,
                         tools=Tools.find())
    candidates = []
    if os.geteuid() == 0:
        root = stage_root(key)
        left = sweep(root)  # a killed run of this agent may have left mounts there
        if left:
            log.info("unmounted what a previous run left staged for %d job(s)", len(left))
        candidates.append(replace(base, stage_root=root, host_ids=job_host_ids(data_dir)))
    candidates.append(base)
    policy: SandboxPolicy | None = None
    problems = []
    for candidate in candidates:
        problem = await trial(candidate, work=data_dir)
        if problem is None:
            policy = candidate
            break
        problems.append(problem)
        log.warning("sandbox (%s) does not work here: %s", candidate.describe(), problem)
    if policy is None:
        return SandboxChoice(None, problems[-1])
    if network is JobNetwork.NONE:
        return SandboxChoice(policy)
    why = _egress_problem()
    pool = None
    if not why:
        pool = NetnsPool(key)
        await pool.sweep()
        try:
            ns = await pool.take()
            try:
                why = await trial(policy, ns.name, work=data_dir) or ""
            finally:
                await pool.release(ns)
        except OSError as exc:
            why = f"a job network namespace could not be made: {exc}"
    if why:
        log.error("jobs get NO network (job_network: egress asked for): %s", why)
        return SandboxChoice(policy, network_problem=why)
    assert pool is not None
    pool.prepare()  # the first job's namespace, made ahead
    return SandboxChoice(replace(policy, network=JobNetwork.EGRESS), netpool=pool)


def _egress_problem() -> str:
    if os.geteuid() != 0:
        return "outbound-only job networks need the agent to run as root"
    missing = missing_tools()
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install passt nftables "
                "iproute2 util-linux)")
    return ""
