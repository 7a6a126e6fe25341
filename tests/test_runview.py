"""The pieces of the compact run view: which paths a run's header names (never a temp or
ignored file), the timing line's arithmetic, when a save's mtime dates it, and the header,
timing and footer lines themselves."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from c3.v1 import common_pb2, daemon_pb2
from c3ctl.runview import failure_reason, footer_line, header_line, timing_line
from c3d.pipeline import MAX_HEADER_PATHS, WorkspacePush, changed_paths, run_header
from c3d.runfollow import RunClock, run_timing
from c3d.watchmode import SAVE_MTIME_SLACK_S, saved_at

pytestmark = pytest.mark.unit

S = common_pb2


def _push(files: dict[str, tuple[str, bool]], digest: str | None = None) -> WorkspacePush:
    info = {p: (d, len(d), x, 0) for p, (d, x) in files.items()}
    stats = daemon_pb2.PushStats(bytes_total=sum(i[1] for i in info.values()), bytes_sent=12)
    return WorkspacePush(digest or "|".join(f"{p}={d}{x}" for p, (d, x) in sorted(files.items())),
                         stats, info)


def test_header_names_what_ships_and_changed_never_temp_or_ignored_files() -> None:
    before = _push({"run.sh": ("a", False), "lib.py": ("b", False), "old.py": ("c", False)})
    after = _push({"run.sh": ("a2", False), "lib.py": ("b", True), "new.py": ("d", False)})
    # The watcher also saw sed's temp file and an ignored log: neither ships, so neither shows.
    touched = {"run.sh", "sedAb12Cd", "debug.log"}
    assert changed_paths(after, before, touched) == ["lib.py", "new.py", "old.py", "run.sh"]
    # A file saved without a change in content is named (the save is what ran).
    same = _push({"run.sh": ("a", False)})
    assert changed_paths(same, same, {"run.sh", ".run.sh.swp"}) == ["run.sh"]
    assert changed_paths(same, same, {"sedAb12Cd"}) == []


def test_header_counts_what_it_does_not_name() -> None:
    before = _push({})
    after = _push({f"f{i:03d}.py": ("x", False) for i in range(MAX_HEADER_PATHS + 5)})
    header = run_header(3, "j-1", after, before)
    assert header.changed_total == MAX_HEADER_PATHS + 5 and len(header.changed) == MAX_HEADER_PATHS
    line = header_line(header)
    assert line == "── run 3 · j-1 · f000.py, f001.py, f002.py and 22 more · 12 B sent ──"
    first = header_line(run_header(0, "j-2", after, None))
    assert first == f"── j-2 · {MAX_HEADER_PATHS + 5} files ({len(after.files)} B) · 12 B sent ──"
    assert header_line(run_header(2, "j-3", after, after)) == "── run 2 · j-3 · nothing changed · 12 B sent ──"


def test_timing_counts_from_the_save_and_takes_the_jobs_own_breakdown() -> None:
    now = time.time()
    startup = S.StartupBreakdown(allocation_ms=4, agent_pickup_ms=2, workspace_fetch_ms=9,
                                 environment_ms=1500, script_start_ms=3, warm_pool_hit=True)
    first = S.JobEvent()
    timing = run_timing(RunClock("save", now - 0.25, now - 0.2), startup, first, None)
    assert timing is not None
    assert timing.since == "save" and 250 <= timing.first_output_ms < 1000
    assert 49 <= timing.push_ms <= 51 and timing.queue_ms == 6
    assert timing_line(timing).startswith("first output ")
    assert "after the save (push 50 ms · queue 6 ms · fetch 9 ms · env 1.50 s · start 3 ms)" in timing_line(timing)
    # Following a job started elsewhere: from its creation, by the coordinator's clock.
    created = S.JobEvent()
    created.at.FromNanoseconds(1_000_000_000_000)
    first.at.FromNanoseconds(1_000_000_000_000 + 123_000_000)
    timing = run_timing(None, startup, first, created)
    assert timing is not None and timing.since == "submit" and timing.first_output_ms == 123
    assert timing_line(timing) == (
        "first output 123 ms after submit (queue 6 ms · fetch 9 ms · env 1.50 s · start 3 ms)")
    assert run_timing(None, startup, first, None) is None
    cold = timing_line(daemon_pb2.RunTiming(since="command", first_output_ms=2500))
    assert cold.endswith("· cold agent)")


def test_a_save_is_dated_by_its_mtime_when_believable(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x")
    noticed = time.time()
    os.utime(tmp_path / "a.py", (noticed - 0.3, noticed - 0.3))
    assert abs(saved_at(tmp_path, ["a.py", "gone.py"], noticed) - (noticed - 0.3)) < 0.01
    # A copy that kept an old mtime is dated by the watcher's notice instead.
    old = noticed - SAVE_MTIME_SLACK_S - 60
    os.utime(tmp_path / "a.py", (old, old))
    assert saved_at(tmp_path, ["a.py"], noticed) == noticed
    assert saved_at(tmp_path, [], noticed) == noticed


def _job(state: int, **kw: object) -> common_pb2.Job:
    job = common_pb2.Job(id="j-abc", state=state, runtime_seconds=2.25, cost_minor=3, **kw)  # type: ignore[arg-type]
    job.started_at.FromSeconds(1)
    return job


def test_footer_says_how_it_ended_in_one_line() -> None:
    none = daemon_pb2.RunSummary(artifact_files=0, currency="GBP")
    two = daemon_pb2.RunSummary(artifact_files=2, currency="USD")
    unknown = daemon_pb2.RunSummary(currency="EUR")
    done = _job(S.JOB_STATE_COMPLETED)
    assert footer_line(done, none) == "[green]● COMPLETED[/] j-abc · 2.2 s · £0.03"
    assert footer_line(done, two).endswith("· $0.03 · 2 artifact files: c3 pull j-abc")
    assert footer_line(done, unknown).endswith("· €0.03 · c3 pull j-abc")
    failed = _job(S.JOB_STATE_FAILED, failure_reason=S.FAILURE_REASON_EXIT_CODE, exit_code=2,
                  message="the script exited with code 2")
    assert footer_line(failed, none) == "[red]● FAILED[/] j-abc (EXIT_CODE 2) · 2.2 s · £0.03"
    oom = _job(S.JOB_STATE_FAILED, failure_reason=S.FAILURE_REASON_OOM, message="out of memory")
    assert "(OOM: out of memory)" in footer_line(oom, none)
    assert failure_reason(S.JOB_STATE_FAILED, S.FAILURE_REASON_AGENT_LOST, 0, "agent a-1 lost") == \
        "AGENT_LOST: agent a-1 lost"
    assert failure_reason(S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, 127, "") == \
        "EXIT_CODE 127: command not found"
    long_run = _job(S.JOB_STATE_CANCELED, message="superseded by j-def")
    long_run.runtime_seconds = 125
    assert footer_line(long_run, none) == "[magenta]● CANCELED[/] j-abc (superseded by j-def) · 2:05 · £0.03"
