"""Exit codes of c3ctl, and of `c3 run` / `c3 deploy -f` from how their job ended.

Like `srun` and `docker run`, a command that ran a job to its end exits with the job's
own exit code when the job's command ran and failed; where there is no such code c3 says
what happened with one of its own, kept clear of the common ones a program uses.
"""

from __future__ import annotations

from c3.v1 import common_pb2

OK = 0
USER_ERROR = 1  # c3 refused before any job ran: a bad .c3, an unknown job, ...
USAGE = 2
UNREACHABLE = 3  # a service could not be reached
TIMED_OUT = 124  # as timeout(1)
COULD_NOT_RUN = 125  # c3 could not run or finish the job (as docker run's 125)
INTERRUPTED = 130  # Ctrl-C: c3 detached, the job keeps running
OOM = 137  # 128 + SIGKILL: the kernel's OOM killer ended it
CANCELED = 143  # 128 + SIGTERM: canceled (by `c3 cancel`, or superseded)

HELP = (
    "Exit status: the job's own exit code when its command ran and failed (127: command "
    "not found, 126: cannot run, 128+N: killed by signal N); 0 when it completed; 124 "
    "timed out; 125 c3 could not run it (environment, workspace, upload, agent lost); 137 "
    "out of memory; 143 canceled; 130 interrupted (the job keeps running); 1 refused "
    "before running (bad .c3, ...); 2 usage; 3 a service could not be reached."
)


def for_job(job: common_pb2.Job) -> int:
    """The exit status that tells how `job` (final) ended."""
    state = job.state
    if state in (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED):
        return OK
    if state == common_pb2.JOB_STATE_TIMED_OUT:
        return TIMED_OUT
    if state == common_pb2.JOB_STATE_CANCELED:
        return CANCELED
    if job.failure_reason == common_pb2.FAILURE_REASON_EXIT_CODE:
        code = job.exit_code
        if code < 0:  # killed by signal -code
            code = 128 - code
        return code if 0 < code < 256 else COULD_NOT_RUN
    if job.failure_reason == common_pb2.FAILURE_REASON_OOM:
        return OOM
    return COULD_NOT_RUN
