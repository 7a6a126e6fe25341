"""`c3 watch -- CMD` in a tree that changes 100 times a second: runs coalesce, never more
than one superseding run is in flight (at any moment at most the run being stopped and the
one waiting to replace it), and once the storm ends the last content runs and everything
before it is cancelled. The coordinator's own change stream (`squeue --follow --json`) is
replayed to check that at every change, not at samples."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.harness.cli import LineReader, c3ctl, running_stack

pytestmark = pytest.mark.e2e

STORM_S = 3.0
RATE_HZ = 100
FINAL = {"COMPLETED", "SYNCED", "FAILED", "CANCELED", "TIMED_OUT"}


def _unfinished(jobs: dict[str, dict[str, object]]) -> list[str]:
    return [i for i, j in jobs.items() if j["status"] not in FINAL]


def test_a_change_storm_coalesces_into_one_live_run(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home") as env:
        project = tmp_path / "storm"
        project.mkdir()
        (project / ".c3").write_text("project: storm\nscript: run.sh\n")
        (project / "run.sh").write_text("echo never the script\n")
        (project / "state.txt").write_text("start\n")
        changes = subprocess.Popen(
            [sys.executable, "-m", "c3ctl.main", "squeue", "--follow", "--json", "--project", "storm"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        watch = subprocess.Popen(
            [sys.executable, "-m", "c3ctl.main", "watch", "--", "sh", "-c", "cat state.txt; sleep 60"],
            env=env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        jobs: dict[str, dict[str, object]] = {}
        try:
            reader = LineReader(watch)
            reader.wait_for("start")

            stop = threading.Event()

            writes = 0

            def storm() -> None:
                nonlocal writes
                while not stop.is_set():
                    writes += 1
                    (project / "state.txt").write_text(f"storm {writes}\n")
                    time.sleep(1 / RATE_HZ)

            writer = threading.Thread(target=storm)
            writer.start()
            time.sleep(STORM_S)  # the storm's length, not a wait for a result
            stop.set()
            writer.join()
            (project / "state.txt").write_text("final\n")
            reader.wait_for("final", timeout=60)

            # The newest job is the final run (nothing is submitted after it). Replay the
            # coordinator's change stream until it runs and every other job has ended.
            listed = json.loads(c3ctl(env, "squeue", "--json", "--project", "storm").stdout)
            final_job = str(listed["jobs"][-1]["id"])
            assert c3ctl(env, "logs", final_job).stdout == "final\n"
            change_reader = LineReader(changes)
            deadline = time.monotonic() + 60
            while True:
                line = change_reader.wait_for('"id"', timeout=max(1.0, deadline - time.monotonic()))
                change_reader.seen.clear()
                job = json.loads(line)
                jobs[str(job["id"])] = job
                live = _unfinished(jobs)
                waiting = [i for i in live if jobs[i]["status"] == "PENDING"]
                assert len(live) <= 2 and len(waiting) <= 1, (
                    f"more than one superseding run in flight: {[jobs[i] for i in live]}")
                if live == [final_job] and jobs[final_job]["status"] == "RUNNING":
                    break
            # Coalesced: no run was superseded before it started (saves wait for the run in
            # flight), so a run goes with many changes and an agent start with each run.
            assert 2 <= len(jobs) <= writes // 2, f"{len(jobs)} runs for {writes} changes"
            assert all(j["status"] == "CANCELED" for i, j in jobs.items() if i != final_job)
            never_started = [i for i, j in jobs.items()
                             if not j["startup"]["script_start_ms"]]  # type: ignore[index]
            assert never_started == [], f"superseded before they started: {[jobs[i] for i in never_started]}"

            # On screen: run numbers only go up, and after the last header only the final
            # content shows.
            watch.terminate()
            _, err = reader.rest(timeout=30)
            headers = [line for line in err.splitlines() if line.startswith("── run ")]
            numbers = [int(h.split()[2]) for h in headers]
            assert numbers == sorted(set(numbers)) and numbers[0] == 1, headers
            assert final_job in headers[-1]
            last_output = [line for stream, line in reader.seen if stream == "out"]
            assert last_output[-1] == "final\n"
        finally:
            watch.kill()
            changes.kill()
            for job_id, job in jobs.items():
                if job["status"] not in FINAL:
                    c3ctl(env, "cancel", job_id)

