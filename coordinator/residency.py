"""Which jobs the coordinator keeps in memory.

Every unfinished job is resident. A finished job stays resident for `keep_s` after it
finished (or after it was last read back from the database), then only the database holds
it. Memory and restart time follow the live work, not the number of jobs ever run: kept
forever, each finished job costs about 2 KB and a share of every restart
(scripts/bench/history: 50,000 jobs, 174 MB and 2.5 s to restart, against 64 MB and 0.3 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Reversible

from coordinator.model import Job


class ResidentJobs:
    def __init__(self, keep_s: float, on_evict: Callable[[Job], None]) -> None:
        self.by_id: dict[str, Job] = {}
        self._by_org: dict[str, dict[str, Job]] = {}
        # Finished jobs, oldest first: loop time they finished, and the write of their
        # final row (a job leaves memory only once the database has it).
        self._finished: dict[str, tuple[float, asyncio.Future[None]]] = {}
        self._keep_s = keep_s
        self._on_evict = on_evict
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_on: asyncio.Future[None] | None = None
        self._closed = False

    def admit(self, job: Job) -> None:
        self.by_id[job.id] = job
        self._by_org.setdefault(job.org_id, {})[job.id] = job

    def of_org(self, org_id: str) -> Reversible[Job]:
        """The org's jobs in memory, in the order they entered it."""
        return self._by_org.get(org_id, {}).values()

    def finished(
        self, job: Job, saved: asyncio.Future[None] | None = None, ago_s: float = 0.0
    ) -> None:
        """`job` is finished (or was read again): keep it `keep_s` from now (less `ago_s`).
        `saved` resolves once its final row is written; None: it is in the database."""
        loop = asyncio.get_running_loop()
        if saved is None:
            saved = loop.create_future()
            saved.set_result(None)
        self._finished.pop(job.id, None)
        self._finished[job.id] = (loop.time() - ago_s, saved)
        if self._timer is None and self._waiting_on is None:
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        oldest_at, _ = next(iter(self._finished.values()))
        self._timer = loop.call_at(oldest_at + self._keep_s, self._sweep)

    def _sweep(self, _: object = None) -> None:
        self._timer = self._waiting_on = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self._keep_s
        while self._finished:
            job_id, (at, saved) = next(iter(self._finished.items()))
            if at > cutoff:
                break
            if not saved.done():
                # Commits land in order: once this row is written, look again.
                self._waiting_on = saved
                saved.add_done_callback(self._sweep)
                return
            del self._finished[job_id]
            if saved.cancelled() or saved.exception() is not None:
                continue  # the database may lack its final row: it stays in memory
            job = self.by_id.pop(job_id, None)
            if job is None:
                continue
            same_org = self._by_org[job.org_id]
            del same_org[job_id]
            if not same_org:
                del self._by_org[job.org_id]
            self._on_evict(job)
        if self._finished:
            self._arm(loop)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
