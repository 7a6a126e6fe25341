"""Agent startup benchmark (issue 5): on one warm `c3-agent` process (real coordinator and
storaged in this process, the agent as its own process), the time from the assignment
reaching the agent to the script's first output line, for

  (a) the first job of a 2,000-file workspace (environment: plain bash, nothing to build),
  (b) a redeploy of that workspace with one file changed,
  (c) a python.project job whose environment is already cached,

next to `bash -c 'echo x'` (spawn to first line) measured in the same run. Both ends are
stamped by the agent: its "picked up" log line carries the moment the assignment arrived,
and each output line carries the moment it was read.

Then the sandbox alone, spawn to first output line of `echo x`, next to the same bare
bash: the old sandbox (bubblewrap as root in the host's network namespace, as before
issue 11), the new one with `job_network: none`, and the new one with `egress` (its
network namespace made ahead, as the agent does; making one is timed on its own). The
last line is one JSON object.

    scripts/bench/agent [--runs 20] [--files 2000] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agent.envs import find_uv
from agent.jobnet import JobNetwork, NetnsPool
from agent.probe import choose_sandbox
from agent.sandbox import JobLayout, LaunchSpec, SandboxPolicy, launch_argv, stage_mounts
from agent.stage import hand_over
from benchmarks.figures import percentile, scratch_dir
from c3.v1 import common_pb2 as S
from c3.v1 import coordinator_pb2 as pb
from tests.harness.coordinator import ENDED, Stack, push_workspace, start_agent_stack

FIRST_LINE = "bench-first-line"
RUN_SH = f"echo {FIRST_LINE}\n"
PYPROJECT = ('[project]\nname = "bench"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
             "dependencies = []\n")


def make_tree(root: Path, files: int, salt: str) -> None:
    """`files` small source-like files in 20 folders (+ run.sh), unique per `salt`."""
    for i in range(files):
        path = root / f"pkg{i % 20:02d}" / f"mod{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {salt} {i}\n" + "x = 1  # padding line\n" * 20)
    (root / "run.sh").write_text(RUN_SH)


async def time_job(stack: Stack, project: str, **fields: Any) -> float:
    """ms from the agent receiving the assignment to the script's first output line."""
    return (await timed_job(stack, project, **fields))[0]


async def timed_job(stack: Stack, project: str, **fields: Any) -> tuple[float, S.Job]:
    """`time_job`'s figure and the finished job (its startup breakdown)."""
    c, md = stack.c, stack.md
    spec = S.JobSpec(project=project, script="run.sh", **fields)
    job = (await c.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=md)).job
    received = first = None
    state = None
    stream = c.StreamJobEvents(pb.StreamJobEventsRequest(job_id=job.id, follow=True), metadata=md)
    async for event in stream:
        if event.HasField("log"):
            line = event.log
            if received is None and line.text.startswith("c3: picked up by"):
                received = line.at.ToNanoseconds()
            if first is None and line.text == FIRST_LINE:
                first = line.at.ToNanoseconds()
        if event.HasField("status") and event.status.state in ENDED:
            state = event.status.state
            break
    done = (await c.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)).job
    if state != S.JOB_STATE_COMPLETED or received is None or first is None:
        raise SystemExit(f"bench job {job.id} ended {S.JobState.Name(done.state)}: {done.message}")
    return (first - received) / 1e6, done


async def bare_bash(env: dict[str, str] | None = None) -> float:
    """`bash -c 'echo x'`, spawn to first line: the reference."""
    return await first_line_ms(["/bin/bash", "-c", "echo x"], env)


async def first_line_ms(argv: list[str], env: dict[str, str] | None = None,
                        fds: list[int] | None = None, cwd: Path | None = None,
                        started: int = 0) -> float:
    """ms from spawn (or from `started`, a perf_counter_ns) to the first stdout line."""
    start = started or time.perf_counter_ns()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, env=env, cwd=cwd, pass_fds=fds or ())
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    elapsed = (time.perf_counter_ns() - start) / 1e6
    await proc.wait()
    if not line:
        raise SystemExit(f"{argv[0]} printed nothing (exit {proc.returncode})")
    return elapsed


async def sandboxed_first_line_ms(spec: LaunchSpec, policy: SandboxPolicy) -> float:
    """Spawn to first line of a sandboxed job, its staging mounts (on the job's path) included."""
    started = time.perf_counter_ns()
    staged = await asyncio.to_thread(stage_mounts, spec, policy)
    launch = launch_argv(spec, policy)
    try:
        return await first_line_ms(launch.argv, launch.env, launch.fds, launch.cwd, started)
    finally:
        launch.close()
        if staged is not None:
            await asyncio.to_thread(staged.unmount)


def old_sandbox_argv(layout: JobLayout) -> list[str]:
    """bubblewrap as the agent ran it before issue 11 (root, the host's network), for reference."""
    argv = ["/usr/bin/bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts"]
    for directory in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        if os.path.islink(directory):
            argv += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            argv += ["--ro-bind", directory, directory]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm",
             "--bind", str(layout.tmp), "/tmp", "--bind", str(layout.workspace), "/workspace",
             "--dir", "/c3", "--bind", str(layout.artifacts), "/c3/artifacts",
             "--chdir", "/workspace"]
    return [*argv, "--", "/bin/bash", "/workspace/run.sh"]


async def bench_sandboxes(work: Path, runs: int) -> dict[str, list[float]]:
    """Spawn to first line: bare bash, the old sandbox, the new one without and with a
    network namespace, and the cost of making one namespace."""
    data = work / "sandbox"
    data.mkdir()
    choice = await choose_sandbox(data, JobNetwork.EGRESS, "bench")
    if choice.policy is None:
        raise SystemExit(f"no sandbox here: {choice.problem}")
    egress = choice.policy
    plain = await choose_sandbox(data, JobNetwork.NONE, "bench")
    assert plain.policy is not None
    layout = JobLayout.under(data / "jobs" / "j-bench")
    layout.create()
    (layout.workspace / "run.sh").write_text("echo x\n")
    env = {"PATH": "/usr/bin:/bin"}
    out: dict[str, list[float]] = {"bash": [], "plain": [], "none": [], "netns": [], "prepare": []}
    pool = NetnsPool(f"bench{os.getpid()}")
    try:
        for _ in range(runs):
            if egress.host_ids is not None:
                hand_over(layout.root, *egress.host_ids)
            out["bash"].append(await bare_bash(env))
            out["plain"].append(await first_line_ms(old_sandbox_argv(layout), env))
            out["none"].append(await sandboxed_first_line_ms(
                LaunchSpec(layout=layout, script="run.sh"), plain.policy))
            started = time.perf_counter_ns()
            ns = await pool.take()  # made now: timed apart from the job
            out["prepare"].append((time.perf_counter_ns() - started) / 1e6)
            # The agent makes it ahead (while the previous job runs or it idles): let pasta
            # settle as it would have by the time a job takes it.
            await asyncio.sleep(0.2)
            try:
                out["netns"].append(await sandboxed_first_line_ms(
                    LaunchSpec(layout=layout, script="run.sh", netns=ns.name), egress))
            finally:
                await pool.release(ns)
    finally:
        await pool.close()
        if choice.netpool is not None:
            await choice.netpool.close()
    return out


async def lock_offline(directory: Path) -> None:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv is needed for the python.project case (pip install uv)")
    proc = await asyncio.create_subprocess_exec(uv, "lock", "--offline", cwd=directory,
                                                stderr=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise SystemExit("uv lock failed for the bench project")


async def bench(work: Path, runs: int, files: int) -> dict[str, Any]:
    async with start_agent_stack(work, "--log-level", "WARNING") as stack:
        print(f"preparing {runs} workspaces of {files} files ...", file=sys.stderr)
        first_digests = []
        for run in range(runs):
            tree = work / f"first{run}"
            await asyncio.to_thread(make_tree, tree, files, f"first-{run}")
            first_digests.append(await push_workspace(stack, tree))
            await asyncio.to_thread(shutil.rmtree, tree)
        base = work / "redeploy"
        await asyncio.to_thread(make_tree, base, files, "redeploy")
        redeploy_digests = []
        for run in range(runs + 1):
            (base / "pkg00" / "mod00000.py").write_text(f"# edit {run}\n")
            redeploy_digests.append(await push_workspace(stack, base))
        py = work / "pyproject"
        py.mkdir()
        (py / "pyproject.toml").write_text(PYPROJECT)
        (py / "run.sh").write_text(RUN_SH)
        await lock_offline(py)
        py_digest = await push_workspace(stack, py)

        # Warm-up: the redeploy base is cached and the env is built before timing.
        await time_job(stack, "redeploy", workspace_manifest_digest=redeploy_digests[0])
        await time_job(stack, "pyenv", workspace_manifest_digest=py_digest, python_project=".")
        results: dict[str, list[float]] = {
            "first": [], "first_fetch": [], "redeploy": [], "pyenv": [], "bash": []}
        # Case by case: a first job's blobs enter the cache in the background (each one
        # fsynced) after its script started; interleaving would time that I/O too.
        for run in range(runs):
            results["bash"].append(await bare_bash())
            results["redeploy"].append(await time_job(
                stack, "redeploy", workspace_manifest_digest=redeploy_digests[run + 1]))
        for _ in range(runs):
            results["pyenv"].append(await time_job(
                stack, "pyenv", workspace_manifest_digest=py_digest, python_project="."))
        for run in range(runs):
            elapsed, job = await timed_job(
                stack, f"first-{run}", workspace_manifest_digest=first_digests[run])
            results["first"].append(elapsed)
            results["first_fetch"].append(job.startup.workspace_fetch_ms)
    boxes = await bench_sandboxes(work, runs)
    labels = {"bash": "bash -c 'echo x' (reference)",
              "first": f"(a) first job, {files}-file workspace",
              "redeploy": "(b) redeploy, one file changed",
              "pyenv": "(c) python.project, env cached"}
    print(f"\n{'case':<40} {'p50 ms':>9} {'p95 ms':>9} {'over bash p50':>14}")
    bash_p50 = statistics.median(results["bash"])
    for key in ("bash", "first", "redeploy", "pyenv"):
        p50, p95 = statistics.median(results[key]), percentile(results[key], 0.95)
        print(f"{labels[key]:<40} {p50:9.1f} {p95:9.1f} {p50 - bash_p50:14.1f}")
        if key == "first":
            fetch = statistics.median(results["first_fetch"])
            print(f"{'    of which workspace fetch':<40} {fetch:9.1f}")
    box_labels = {"bash": "bash -c 'echo x' (reference)",
                  "plain": "old sandbox (bwrap as root, host network)",
                  "none": "new sandbox, job_network none",
                  "netns": "new sandbox, job_network egress",
                  "prepare": "    making one network namespace (ahead)"}
    box_bash = statistics.median(boxes["bash"])
    print(f"\n{'sandbox, spawn to first line':<40} {'p50 ms':>9} {'p95 ms':>9} {'over bash p50':>14}")
    for key, label in box_labels.items():
        p50, p95 = statistics.median(boxes[key]), percentile(boxes[key], 0.95)
        over = f"{p50 - box_bash:14.1f}" if key != "prepare" else f"{'(off path)':>14}"
        print(f"{label:<40} {p50:9.1f} {p95:9.1f} {over}")
    netns_p50 = statistics.median(boxes["netns"])
    plain_p50 = statistics.median(boxes["plain"])
    return {
        "runs": runs, "files": files,
        "first_job_p50_ms": round(statistics.median(results["first"]), 2),
        "first_job_p95_ms": round(percentile(results["first"], 0.95), 2),
        # Of which fetching the workspace (the job's startup.workspace_fetch_ms).
        "first_job_fetch_p50_ms": round(statistics.median(results["first_fetch"]), 2),
        "redeploy_p50_ms": round(statistics.median(results["redeploy"]), 2),
        "redeploy_p95_ms": round(percentile(results["redeploy"], 0.95), 2),
        "pyenv_p50_ms": round(statistics.median(results["pyenv"]), 2),
        "pyenv_p95_ms": round(percentile(results["pyenv"], 0.95), 2),
        "bare_bash_p50_ms": round(bash_p50, 2),
        "bare_bash_p95_ms": round(percentile(results["bash"], 0.95), 2),
        "sandbox_netns_p50_ms": round(netns_p50, 2),
        "sandbox_none_p50_ms": round(statistics.median(boxes["none"]), 2),
        "sandbox_plain_p50_ms": round(plain_p50, 2),
        "sandbox_bare_bash_p50_ms": round(box_bash, 2),
        "netns_prepare_p50_ms": round(statistics.median(boxes["prepare"]), 2),
        "netns_over_plain_p50_ms": round(netns_p50 - plain_p50, 2),
        "goal_met": (statistics.median(results["redeploy"]) - bash_p50 <= 50
                     and statistics.median(results["pyenv"]) - bash_p50 <= 50),
        "sandbox_goal_met": netns_p50 - plain_p50 <= 15,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    with scratch_dir("agent", keep=args.keep) as work:
        summary = asyncio.run(bench(work, args.runs, args.files))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
