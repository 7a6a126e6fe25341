"""Every benchmark runs from a fresh clone and ends with its JSON line (tiny sizes here:
the figures themselves come from full runs, reported in the notes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "schedule": (
        ["--agents", "20", "--jobs", "200", "--single", "5", "--repeat", "1"],
        {"jobs_per_s", "assign_p50_ms", "assign_p99_ms", "single_assign_p99_ms",
         "coordinator_rss_mb", "unbatched_jobs_per_s"},
    ),
    "history": (
        ["--jobs", "2000"],
        {"rss_mb", "rss_mb_all_in_memory", "restart_s", "restart_s_all_in_memory",
         "list50_p50_ms", "get_old_p50_ms"},
    ),
    "push": (
        ["--small-files", "200", "--large-files", "2", "--large-mib", "2"],
        {"cold_mb_s", "tar_zstd_mb_s", "ratio_vs_tar_zstd", "small_files_per_s",
         "unchanged_repush_s", "unchanged_repush_bytes", "changed_repush_bytes"},
    ),
    "agent": (
        ["--runs", "2", "--files", "50"],
        {"first_job_p50_ms", "redeploy_p50_ms", "pyenv_p50_ms", "bare_bash_p50_ms",
         "sandbox_netns_p50_ms", "sandbox_plain_p50_ms", "sandbox_none_p50_ms",
         "netns_prepare_p50_ms"},
    ),
    "redeploy": (
        ["--runs", "2", "--files", "50", "--manifest-files", "500", "--rss-files", "1000"],
        {"watch_p50_ms", "watch_p95_ms", "cli_p50_ms", "manifest_after_change_ms", "rss_100k_mb",
         "timing_line_p50_ms", "timing_line_vs_measured"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_prints_its_json_line(name: str, tmp_path: Path) -> None:
    args, keys = CASES[name]
    env = {**os.environ, "PYTHON": sys.executable, "C3_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [str(ROOT / "scripts" / "bench" / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert keys <= figures.keys(), keys - figures.keys()
    for key in keys:
        assert isinstance(figures[key], int | float) and figures[key] >= 0, (key, figures[key])
