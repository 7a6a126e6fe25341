"""Scheduling benchmark (scripts/bench/schedule): many simulated agents, a burst of jobs.

This process starts the coordinator and a separate agents process (tests/harness/agents.py),
submits the jobs and reports placement throughput, submit->assigned latency and the
coordinator's RSS. The agents process prints one line per assignment: the latency from
the job's creation to its arrival on the agent, both on this host's clock.

The headline burst submits through SubmitJobs, 25 jobs a call (a sweep); the same burst
is then repeated with one SubmitJob call per job and reported next to it (`unbatched_*`).
The whole run (a fresh coordinator and agents process, the single-job probe, the batched
burst) happens `--repeat` times (default 3) and the median run is reported, with every
run's throughput listed: these machines are noisy, and one run can be 25% slower than the
next for no reason of ours. The one-call-per-job burst follows the last run's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.figures import cpu_s, percentile, rss_mb
from c3.grpcutil import bearer, channel
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.v1 import coordinator_pb2 as pb
from c3.v1 import coordinator_pb2_grpc
from tests.harness.agents import HEARTBEAT_MS
from tests.harness.coordinator import client, spec
from tests.harness.processes import start_coordinator_process, stop_processes

UNBATCHED_CONCURRENCY = 64


@dataclass
class Burst:
    elapsed: float
    latencies: list[float]
    cpu_share: dict[str, float]  # share of one core each process used during the burst


async def burst(
    stub: coordinator_pb2_grpc.CoordinatorAsyncStub,
    md: tuple[tuple[str, str], ...],
    out: asyncio.StreamReader,
    procs: dict[str, int],
    jobs: int,
    submit_batch: int,
    concurrency: int,
) -> Burst:
    """Submit `jobs` jobs from `concurrency` tasks; returns when every one has reached an agent."""
    left = jobs

    async def submitter() -> None:
        nonlocal left
        while left > 0:
            count = min(submit_batch, left)
            left -= count
            if submit_batch == 1:
                await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(project="bench")), metadata=md)
            else:
                entries = [pb.SubmitJobRequest(spec=spec(project="bench")) for _ in range(count)]
                await stub.SubmitJobs(pb.SubmitJobsRequest(jobs=entries), metadata=md)

    cpu0 = {name: cpu_s(pid) for name, pid in procs.items()}
    t0 = time.perf_counter()
    submitters = [asyncio.create_task(submitter()) for _ in range(concurrency)]
    latencies = [float((await out.readline()).split()[2]) for _ in range(jobs)]
    elapsed = time.perf_counter() - t0
    cpu_share = {name: (cpu_s(pid) - cpu0[name]) / elapsed for name, pid in procs.items()}
    await asyncio.gather(*submitters)
    return Burst(elapsed, latencies, cpu_share)


@dataclass
class Run:
    """One fresh coordinator and agents process: the spec's setup, measured once."""

    connect_s: float
    single_latencies: list[float]
    batched: Burst
    unbatched: Burst | None
    rss_mb: float
    peak_rss_mb: float


async def one_run(
    agents: int, jobs: int, single: int, concurrency: int, submit_batch: int, unbatched: bool
) -> Run:
    tmp = Path(tempfile.mkdtemp(prefix="c3-bench-"))
    # C3_BENCH_PROFILE=FILE runs the coordinator under cProfile (written on shutdown).
    profile = os.environ.get("C3_BENCH_PROFILE")
    coord, address, _ = await start_coordinator_process(
        tmp, "--heartbeat-ms", str(HEARTBEAT_MS), "--starting-credit-minor", str(10**12),
        wrap=["-m", "cProfile", "-o", profile] if profile else (),
    )
    running = [coord]
    try:
        boot = json.loads((tmp / "bootstrap.json").read_text())
        # C3_BENCH_PROFILE_AGENTS=FILE profiles the agents process the same way.
        agents_profile = os.environ.get("C3_BENCH_PROFILE_AGENTS")
        agents_wrap = ["-m", "cProfile", "-o", agents_profile] if agents_profile else []
        child = await asyncio.create_subprocess_exec(
            sys.executable, *agents_wrap, "-m", "tests.harness.agents", address,
            boot["agent_secret"], str(agents), stdout=asyncio.subprocess.PIPE,
        )
        running.insert(0, child)
        assert child.stdout is not None
        out = child.stdout
        t_connect = time.perf_counter()
        while (await out.readline()).strip() != b"READY":
            pass
        connect_s = time.perf_counter() - t_connect
        md = bearer(boot["api_key"])
        procs = {"coordinator": coord.pid, "agents": child.pid, "submitter": os.getpid()}
        async with channel(address) as ch:
            stub = client(ch)
            single_lat = []
            for _ in range(single):  # one job at a time on an idle pool
                await stub.SubmitJob(pb.SubmitJobRequest(spec=spec(project="bench")), metadata=md)
                single_lat.append(float((await out.readline()).split()[2]))
            batched = await burst(stub, md, out, procs, jobs, submit_batch, concurrency)
            rss, hwm = rss_mb(coord.pid)
            other = None
            if unbatched:  # the same burst size again, one SubmitJob call per job
                other = await burst(stub, md, out, procs, jobs, 1, UNBATCHED_CONCURRENCY)
    finally:
        await stop_processes(*running)
        shutil.rmtree(tmp, ignore_errors=True)
    return Run(connect_s, single_lat, batched, other, rss, hwm)


async def bench(
    agents: int, jobs: int, single: int, concurrency: int, submit_batch: int, repeat: int
) -> dict[str, object]:
    runs = []
    for index in range(repeat):
        last = index == repeat - 1
        runs.append(await one_run(agents, jobs, single, concurrency, submit_batch, last))
    median = sorted(runs, key=lambda r: r.batched.elapsed)[len(runs) // 2]
    batched, unbatched = median.batched, runs[-1].unbatched
    assert unbatched is not None
    single_lat = [lat for r in runs for lat in r.single_latencies]
    return {
        "agents": agents,
        "jobs": jobs,
        "submit_batch": submit_batch,
        "agents_connect_s": round(median.connect_s, 2),
        "jobs_per_s": round(jobs / batched.elapsed, 1),
        "jobs_per_s_each_run": [round(jobs / r.batched.elapsed, 1) for r in runs],
        "assign_p50_ms": round(statistics.median(batched.latencies), 2),
        "assign_p99_ms": round(percentile(batched.latencies, 0.99), 2),
        "single_assign_p50_ms": round(statistics.median(single_lat), 3),
        "single_assign_p99_ms": round(percentile(single_lat, 0.99), 3),
        "coordinator_rss_mb": round(median.rss_mb, 1),
        "coordinator_peak_rss_mb": round(median.peak_rss_mb, 1),
        "cpus": os.cpu_count() or 0,
        **{f"{name}_cpu_cores": round(share, 2) for name, share in batched.cpu_share.items()},
        "unbatched_jobs_per_s": round(jobs / unbatched.elapsed, 1),
        "unbatched_assign_p50_ms": round(statistics.median(unbatched.latencies), 2),
        "unbatched_assign_p99_ms": round(percentile(unbatched.latencies, 0.99), 2),
        # Anchors (documented, not measured here): Slurm 500 jobs/s, Nomad C2M ~1,500/s.
        "reference_slurm_jobs_per_s": 500,
        "reference_nomad_placements_per_s": 1500,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/bench/schedule")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--single", type=int, default=200, help="jobs submitted one at a time")
    p.add_argument("--concurrency", type=int, default=8, help="submit calls in flight")
    p.add_argument("--repeat", type=int, default=3, help="fresh runs; the median is reported")
    p.add_argument(
        "--submit-batch", type=int, default=25, help="jobs per SubmitJobs call (1: SubmitJob)"
    )
    args = p.parse_args()
    for name in ("agents", "jobs", "single", "concurrency", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: give 1 or more")
    if not 1 <= args.submit_batch <= MAX_JOBS_PER_SUBMIT:
        p.error(f"--submit-batch: give 1 to {MAX_JOBS_PER_SUBMIT} (jobs per SubmitJobs call)")
    result = asyncio.run(
        bench(args.agents, args.jobs, args.single, args.concurrency, args.submit_batch, args.repeat)
    )
    for key, value in result.items():
        print(f"{key:>34}: {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
