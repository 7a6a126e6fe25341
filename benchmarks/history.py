"""Job history benchmark (scripts/bench/history): a coordinator with a long history.

Two fresh coordinator processes take the same work: `--jobs` jobs submitted 1,000 per
SubmitJobs call and cancelled, so all of them are finished. One keeps finished jobs in
memory for an hour (the reference: every job resident, as before residency.py), the other
lets them go at once (`--keep-finished-s 0`). For each the benchmark reports the process's
RSS, `squeue` (ListJobs, newest 50) and `GetJob` of an old job, and how long a restart on
that database takes until the coordinator serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.figures import rss_mb
from c3.grpcutil import bearer, channel
from c3.v1 import coordinator_pb2 as pb
from c3.v1 import coordinator_pb2_grpc
from tests.harness.coordinator import client, spec
from tests.harness.processes import start_coordinator_process, stop_processes

BATCH = 1000
PROBES = 30


async def start(data: Path, keep_s: float) -> tuple[asyncio.subprocess.Process, str, float]:
    return await start_coordinator_process(data, "--keep-finished-s", str(keep_s))


async def probe(
    stub: coordinator_pb2_grpc.CoordinatorAsyncStub, md: tuple[tuple[str, str], ...], old_ids: list[str]
) -> dict[str, float]:
    list_ms, get_ms = [], []
    for i in range(PROBES):
        t0 = time.perf_counter()
        await stub.ListJobs(pb.ListJobsRequest(limit=50), metadata=md)
        list_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        job_id = old_ids[(i * 7919) % len(old_ids)]
        await stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md)
        get_ms.append((time.perf_counter() - t0) * 1000)
    return {"list50_p50_ms": statistics.median(list_ms), "get_old_p50_ms": statistics.median(get_ms)}


async def one(jobs: int, keep_s: float) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="c3-history-"))
    proc, address, _ = await start(data, keep_s)
    try:
        boot = json.loads((data / "bootstrap.json").read_text())
        md = bearer(boot["api_key"])
        ids: list[str] = []
        t0 = time.perf_counter()
        async with channel(address) as ch:
            stub = client(ch)
            for start_at in range(0, jobs, BATCH):
                count = min(BATCH, jobs - start_at)
                entries = [pb.SubmitJobRequest(spec=spec(project="history")) for _ in range(count)]
                reply = await stub.SubmitJobs(pb.SubmitJobsRequest(jobs=entries), metadata=md)
                batch = [j.id for j in reply.jobs]
                await stub.CancelJob(pb.CancelJobRequest(job_ids=batch), metadata=md)
                ids += batch
            fill_s = time.perf_counter() - t0
            figures = await probe(stub, md, ids[: len(ids) // 2])
        rss, _ = rss_mb(proc.pid)
        await stop_processes(proc)
        proc, address, restart_s = await start(data, keep_s)
        async with channel(address) as ch:
            listed = await client(ch).ListJobs(pb.ListJobsRequest(limit=1), metadata=md)
            assert listed.jobs[0].id == ids[-1], "the restarted coordinator lists the newest job"
    finally:
        await stop_processes(proc)
        shutil.rmtree(data, ignore_errors=True)
    return {"rss_mb": rss, "restart_s": restart_s, "fill_s": fill_s, **figures}


async def bench(jobs: int) -> dict[str, object]:
    kept = await one(jobs, 3600.0)  # reference: every finished job stays in memory
    evicting = await one(jobs, 0.0)
    return {
        "jobs": jobs,
        "rss_mb": round(evicting["rss_mb"], 1),
        "rss_mb_all_in_memory": round(kept["rss_mb"], 1),
        "rss_ratio": round(evicting["rss_mb"] / kept["rss_mb"], 3),
        "restart_s": round(evicting["restart_s"], 3),
        "restart_s_all_in_memory": round(kept["restart_s"], 3),
        "restart_ratio": round(evicting["restart_s"] / kept["restart_s"], 3),
        "list50_p50_ms": round(evicting["list50_p50_ms"], 2),
        "list50_p50_ms_all_in_memory": round(kept["list50_p50_ms"], 2),
        "get_old_p50_ms": round(evicting["get_old_p50_ms"], 2),
        "get_old_p50_ms_all_in_memory": round(kept["get_old_p50_ms"], 2),
        "fill_s": round(evicting["fill_s"], 2),
        "fill_s_all_in_memory": round(kept["fill_s"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/bench/history")
    p.add_argument("--jobs", type=int, default=50_000, help="finished jobs in the history")
    args = p.parse_args()
    if args.jobs < 2:
        p.error("--jobs must be at least 2")
    result = asyncio.run(bench(args.jobs))
    for key, value in result.items():
        print(f"{key:>30}: {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
