"""Limits the CLI, the daemon and the coordinator must agree on."""

from __future__ import annotations

# Jobs one SubmitJobs call may carry; a `deploy --array` is submitted in one call, so
# this is also the largest array.
MAX_JOBS_PER_SUBMIT = 1000
