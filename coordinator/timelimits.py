"""Time limits the coordinator enforces itself, for when the agent does not.

One TimerHandle per running job with a limit: at limit + grace the coordinator pushes a
TIMED_OUT cancel to the agent; if the job is still not over after another grace, it
records TIMED_OUT itself and frees the agent's slot. No polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from coordinator.lifecycle import State
from coordinator.model import Job

log = logging.getLogger(__name__)


class TimeLimits:
    def __init__(
        self,
        grace_s: float,
        push_cancel: Callable[[Job, State, str], None],
        force_timeout: Callable[[Job, str], None],
    ) -> None:
        self._grace = grace_s
        self._push_cancel = push_cancel
        self._force_timeout = force_timeout
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def started(self, job: Job) -> None:
        limit = job.spec.time_limit_seconds
        if not limit:
            return
        elapsed = time.time() - (job.started_at or time.time())
        delay = max(0.0, limit + self._grace - elapsed)
        self._arm(job, delay, self._over_limit)

    def stopped(self, job: Job) -> None:
        timer = self._timers.pop(job.id, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _arm(self, job: Job, delay: float, then: Callable[[Job], None]) -> None:
        self.stopped(job)
        loop = asyncio.get_running_loop()
        self._timers[job.id] = loop.call_later(delay, then, job)

    def _over_limit(self, job: Job) -> None:
        self._timers.pop(job.id, None)
        if job.state != State.RUNNING:
            return
        why = f"time limit of {job.spec.time_limit_seconds}s exceeded"
        log.info("job %s: %s; telling agent %s to stop it", job.id, why, job.agent_id)
        self._push_cancel(job, State.TIMED_OUT, why)
        self._arm(job, self._grace, self._agent_silent)

    def _agent_silent(self, job: Job) -> None:
        self._timers.pop(job.id, None)
        if job.state != State.RUNNING:
            return
        self._force_timeout(
            job,
            f"time limit of {job.spec.time_limit_seconds}s exceeded; "
            f"agent {job.agent_id} did not stop the job",
        )
