"""Per-second metering of running jobs, charged to the org's balance in minor units.

A job is metered from script start (RUNNING) to its end; queueing and provisioning are
free. The charge is `ceil(milliseconds * price_per_hour / 3_600_000)` minor units, all
integer arithmetic. While an org has running jobs, one timer per org fires at the moment
its balance is projected to run out and stops them with FAILED / BALANCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from coordinator.accounts import Accounts
from coordinator.catalog import Catalog
from coordinator.changes import JobChange, JobChanged, Topic
from coordinator.lifecycle import FINISHED, Reason, State
from coordinator.model import Charge, Job
from coordinator.repository import Repository

log = logging.getLogger(__name__)

MS_PER_HOUR = 3_600_000
# Longest an exhaustion timer is armed ahead; it re-checks the balance when it fires.
EXHAUSTION_RECHECK_S = 60.0


class Stopper(Protocol):
    """What billing needs of the job service: to save a job and have its agent stop it."""

    def save(self, job: Job) -> asyncio.Future[None]: ...

    def request_cancel(self, job: Job, state: State, reason: str) -> None: ...


class UsageSource(Protocol):
    """Where an org's stored bytes come from (storaged, over coordinator/storage.py)."""

    async def stored_bytes(self, org_id: str, timeout: float) -> int: ...


def cost_minor(millis: int, price_per_hour_minor: int) -> int:
    """Integer cost of `millis` of runtime, rounded up to a whole minor unit."""
    return -(-millis * price_per_hour_minor // MS_PER_HOUR)


def month_start(now: float) -> float:
    t = time.gmtime(now)
    return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))


class Billing:
    def __init__(
        self,
        accounts: Accounts,
        jobs: Stopper,
        job_changes: Topic[JobChange],
        repo: Repository,
        catalog: Catalog,
        usage: UsageSource,
    ) -> None:
        self._accounts = accounts
        self._jobs = jobs
        self._repo = repo
        self._catalog = catalog
        self._usage = usage
        self._charges: dict[str, Charge] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # org -> its RUNNING jobs by id: every transition consults it, so it must not
        # be a scan of all jobs.
        self._running_by_org: dict[str, dict[str, Job]] = {}
        # org -> (sum of running prices per hour, sum of price * started_at), kept in step
        # with _running_by_org so the exhaustion timer is re-planned in O(1) per transition.
        self._rate: dict[str, tuple[int, float]] = {}
        self._metered: dict[str, tuple[int, float]] = {}  # job id -> (price, started_at)
        job_changes.subscribe(self._on_change)

    async def load(self, resident: Iterable[Job]) -> None:
        """The charges so far; meter the jobs running at startup."""
        for charge in await self._repo.load_charges():
            self._charges[charge.job_id] = charge
        for job in resident:
            if job.state == State.RUNNING:
                self._start_metering(job)
        for org_id in list(self._running_by_org):
            self._reschedule(org_id)

    # -- metering ------------------------------------------------------------------------
    def price(self, job: Job) -> int:
        profile = self._catalog.profile(job.gpu_profile)
        return profile.price_per_hour_minor if profile is not None else 0

    def _start_metering(self, job: Job) -> None:
        running = self._running_by_org.setdefault(job.org_id, {})
        if job.id in running:
            return
        running[job.id] = job
        if job.started_at:
            price = self.price(job)
            self._metered[job.id] = (price, job.started_at)
            rate, weighted = self._rate.get(job.org_id, (0, 0.0))
            self._rate[job.org_id] = (rate + price, weighted + price * job.started_at)

    def _stop_metering(self, job: Job) -> None:
        running = self._running_by_org.get(job.org_id)
        if running is None or running.pop(job.id, None) is None:
            return
        metered = self._metered.pop(job.id, None)
        if not running:  # start from exact zeros again: no float drift accumulates
            self._rate.pop(job.org_id, None)
        elif metered is not None:
            price, started_at = metered
            rate, weighted = self._rate[job.org_id]
            self._rate[job.org_id] = (rate - price, weighted - price * started_at)

    def _on_change(self, change: JobChange) -> None:
        if not isinstance(change, JobChanged):
            return
        job, target = change.job, change.target
        if target == State.RUNNING:
            self._start_metering(job)
        else:
            self._stop_metering(job)
        if target == State.RUNNING:
            self._reschedule(job.org_id)
        elif target in FINISHED and target != State.SYNCED:
            if job.started_at and job.id not in self._charges:
                self._charge(job)
            self._reschedule(job.org_id)

    def _charge(self, job: Job) -> None:
        millis = max(0, round((job.finished_at - job.started_at) * 1000))
        amount = cost_minor(millis, self.price(job))
        charge = Charge(job.id, job.org_id, amount, millis, job.gpu_profile, job.finished_at)
        self._charges[job.id] = charge
        self._repo.put_charge(charge)
        if amount:
            self._accounts.adjust_balance(job.org_id, -amount)
        log.info("job %s: %d ms on %s charged %d minor units", job.id, millis, job.gpu_profile, amount)

    def _running(self, org_id: str) -> list[Job]:
        return [j for j in self._running_by_org.get(org_id, {}).values() if j.started_at]

    def _remaining_minor(self, org_id: str, now: float) -> float:
        """Balance minus what the org's running jobs have used so far (not yet charged)."""
        rate, weighted = self._rate.get(org_id, (0, 0.0))
        accrued = (rate * now - weighted) / 3600  # = sum(price * (now - started_at)) / 3600
        return self._accounts.org(org_id).balance_minor - accrued

    def _reschedule(self, org_id: str) -> None:
        """Arm the org's exhaustion timer no later than its balance can run out.

        Called on every job start and finish, so it only re-arms when the moment moved
        earlier: a timer that fires early re-checks and re-arms itself, and one capped at
        EXHAUSTION_RECHECK_S keeps a rich org from re-arming on each of its jobs."""
        rate = self._rate.get(org_id, (0, 0.0))[0]  # minor units per hour
        timer = self._timers.get(org_id)
        if rate <= 0:
            return  # nothing accrues; a pending timer only re-checks and finds nothing
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._remaining_minor(org_id, time.time()) * 3600 / rate)
        when = loop.time() + min(delay, EXHAUSTION_RECHECK_S)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[org_id] = loop.call_at(when, self._exhausted, org_id)

    def _exhausted(self, org_id: str) -> None:
        self._timers.pop(org_id, None)
        if self._remaining_minor(org_id, time.time()) > 0.01:
            self._reschedule(org_id)  # a top-up arrived meanwhile
            return
        for job in self._running(org_id):
            if job.cancel_requested:
                continue
            log.info("job %s: org %s balance exhausted; stopping it", job.id, org_id)
            job.failure_reason = Reason.BALANCE_EXHAUSTED
            job.cancel_requested = True
            job.message = "stopped: the org's balance is exhausted (top up to run more)"
            self._jobs.save(job)
            self._jobs.request_cancel(job, State.FAILED, "balance exhausted")

    def balance_changed(self, org_id: str) -> None:
        """Re-plan the exhaustion timer after a top-up."""
        self._reschedule(org_id)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- reporting -----------------------------------------------------------------------
    def charges(self, org_id: str) -> list[Charge]:
        return sorted((c for c in self._charges.values() if c.org_id == org_id),
                      key=lambda c: c.at)  # fmt: skip

    def month_spend(self, org_id: str, now: float | None = None) -> int:
        start = month_start(now if now is not None else time.time())
        return sum(c.amount_minor for c in self.charges(org_id) if c.at >= start)

    async def storage_bytes(self, org_id: str) -> int:
        """Bytes the org has committed, as storaged counts them (0 when unreachable)."""
        try:
            return await self._usage.stored_bytes(org_id, timeout=5)
        except Exception as exc:  # the balance still answers without storage
            log.warning("storage usage for org %s unavailable: %s", org_id, exc)
            return 0
