"""How a finished script maps to the job's final state, failure reason and message."""

from __future__ import annotations

from typing import Any

from agent.runner import Ending, RunResult
from c3.v1 import common_pb2

S = common_pb2


def stop_ending(state: common_pb2.JobState.ValueType) -> Ending:
    """How a run is stopped for a coordinator's cancel in `state`."""
    return Ending.TIMED_OUT if state == S.JOB_STATE_TIMED_OUT else Ending.CANCELED


def final_status(result: RunResult, memory_bytes: int, path: str, version: int,
                 pids_max: int = 0) -> tuple[Any, ...]:
    """(state, failure reason, exit code, message, artifacts path, artifacts version) of a
    run whose artifacts (if any) are committed at `path`/`version`."""
    if result.ending is Ending.CANCELED:
        return (S.JOB_STATE_CANCELED, S.FAILURE_REASON_UNSPECIFIED, result.exit_code,
                result.reason, path, version)
    if result.ending is Ending.TIMED_OUT:
        return (S.JOB_STATE_TIMED_OUT, S.FAILURE_REASON_UNSPECIFIED, result.exit_code,
                result.reason, path, version)
    if result.ending is Ending.DISK_LIMIT:
        return (S.JOB_STATE_FAILED, S.FAILURE_REASON_DISK_LIMIT, result.exit_code,
                result.reason, path, version)
    if result.ending is Ending.PIDS_LIMIT or (result.pids_limited and result.exit_code != 0):
        return (S.JOB_STATE_FAILED, S.FAILURE_REASON_PIDS_LIMIT, result.exit_code,
                result.reason or f"the job hit its limit of {pids_max} processes (pids.max); "
                "fork fewer processes or threads", path, version)
    if result.oom_killed and result.exit_code != 0:
        return (S.JOB_STATE_FAILED, S.FAILURE_REASON_OOM, result.exit_code,
                f"out of memory: the job used more than its {memory_bytes >> 20} MiB memory "
                "share and the OOM killer ended it; use less memory or a profile with "
                "more GPUs (memory is shared in proportion)", path, version)
    if result.exit_code != 0:
        return (S.JOB_STATE_FAILED, S.FAILURE_REASON_EXIT_CODE, result.exit_code,
                f"the script exited with code {result.exit_code}", path, version)
    return (S.JOB_STATE_COMPLETED, S.FAILURE_REASON_UNSPECIFIED, 0, "", path, version)
