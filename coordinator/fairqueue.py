"""The pending queue: FIFO within an org, round-robin across orgs, with per-org limits.

The org whose last placement is oldest goes first, so a burst of thousands of jobs from one org does not
make another org's single job wait behind it. An org's count of jobs on agents
(SCHEDULING or RUNNING) is kept here so the limit check is O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from coordinator.model import Job


class FairQueue:
    def __init__(self, limit_of: Callable[[str], tuple[int, str]]) -> None:
        # limit_of(org_id) -> (limit, plan); limit 0 means unlimited.
        self._limit_of = limit_of
        self._by_org: OrderedDict[str, OrderedDict[str, Job]] = OrderedDict()
        self._size = 0
        self.active: dict[str, int] = {}
        # When each org last had a job placed (a counter): the longest-unserved goes first.
        self._served_at: dict[str, int] = {}
        self._clock = 0

    def __len__(self) -> int:
        return self._size

    def jobs(self) -> Iterator[Job]:
        for queue in list(self._by_org.values()):
            yield from list(queue.values())

    def org_jobs(self, org_id: str) -> list[Job]:
        return list(self._by_org.get(org_id, {}).values())

    def add(self, job: Job, front: bool = False) -> None:
        queue = self._by_org.setdefault(job.org_id, OrderedDict())
        if job.id not in queue:
            self._size += 1
        queue[job.id] = job
        if front:
            queue.move_to_end(job.id, last=False)

    def remove(self, job: Job) -> bool:
        queue = self._by_org.get(job.org_id)
        if queue is None or queue.pop(job.id, None) is None:
            return False
        self._size -= 1
        if not queue:
            del self._by_org[job.org_id]
        return True

    # -- limits ------------------------------------------------------------------------
    def at_limit(self, org_id: str) -> bool:
        limit, _ = self._limit_of(org_id)
        return bool(limit) and self.active.get(org_id, 0) >= limit

    def limit_message(self, org_id: str) -> str:
        _, plan = self._limit_of(org_id)
        return f"concurrency limit reached ({self.active.get(org_id, 0)} running on plan {plan})"

    def started(self, org_id: str) -> None:
        self.active[org_id] = self.active.get(org_id, 0) + 1
        self._clock += 1
        self._served_at[org_id] = self._clock

    def stopped(self, org_id: str) -> bool:
        """One job of the org left its agent; True when that took the org off its limit."""
        was_at_limit = self.at_limit(org_id)
        self.active[org_id] = max(0, self.active.get(org_id, 0) - 1)
        return was_at_limit and not self.at_limit(org_id)

    # -- fair choice -------------------------------------------------------------------
    def take_for(self, accepts: Callable[[Job], bool]) -> Job | None:
        """The next job an agent should run: orgs in turn, each org's jobs in order."""
        orgs = list(self._by_org)
        if len(orgs) > 1:
            orgs.sort(key=lambda org_id: self._served_at.get(org_id, 0))
        for org_id in orgs:
            if self.at_limit(org_id):
                continue
            for job in self._by_org[org_id].values():
                if accepts(job):
                    return job
        return None
