"""Warm pools: per profile keep `baseline` idle agents, grow toward pending demand up to
`cap` through a provider, and release extra idle agents after the idle timeout.

The scheduler tells of every change (a job queued, an agent idle, connected or lost) on
the agent topic; each calls `kick()`, which runs one reconcile pass on the next loop turn; timers cover idle timeouts, registration
timeouts and retry backoff. Each started agent has a watcher (the provider's
`watch_start`) until it registers: it keeps the pending jobs' message saying where the
start stands, and turns an agent that ended before registering into a failure at once
instead of at the registration timeout. Nothing here polls (the Slurm provider has to
ask squeue, and only while an agent is starting).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Protocol

from coordinator.agents import AgentState
from coordinator.changes import AgentChange, Topic
from coordinator.lifecycle import State
from coordinator.model import Job
from coordinator.placement import fits
from coordinator.poolstate import BACKOFF_START_S, Pool, PoolBoard, Starting
from coordinator.providers.base import Provider, ProvisionError

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 60.0


class PoolHost(Protocol):
    """What the pools need of the scheduler."""

    def known_agents(self) -> Iterable[AgentState]: ...

    def pending_jobs(self) -> Iterable[Job]: ...

    def release(self, agent: AgentState) -> None: ...

    def refresh_pending(self) -> None: ...


class PoolManager:
    def __init__(
        self,
        board: PoolBoard,
        providers: Mapping[str, Provider],
        scheduler: PoolHost,
        agent_changes: Topic[AgentChange],
        classes: frozenset[str],
    ) -> None:
        self._board = board
        self._scheduler = scheduler
        self.providers = dict(providers)
        self._classes = classes
        self.pools = board.pools
        self._scheduled = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()  # cancelled ones may still be ending
        self._timers: list[asyncio.TimerHandle] = []
        agent_changes.subscribe(self._on_agent_change)
        self.kick()

    def provider_of(self, pool: Pool) -> Provider:
        return self.providers[pool.policy.provider]

    # -- what the scheduler tells ----------------------------------------------------------
    def _on_agent_change(self, change: AgentChange) -> None:
        agent = change.agent
        if change.kind == "connected" and agent is not None:
            self.agent_connected(agent)
        elif change.kind == "disconnected" and agent is not None:
            self.agent_disconnected(agent)
        elif change.kind == "lost" and agent is not None:
            self.agent_lost(agent)
        else:
            self.kick()

    def kick(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._reconcile)

    def agent_connected(self, agent: AgentState) -> None:
        pool = self._board.pool_of(agent)
        if pool is None:
            return
        agent.pool = pool.policy.name
        if agent.id not in pool.members:
            handle = None
            launch_id = agent.caps.launch_id
            # Only the start this agent names is done: starts register in any order, and
            # an agent started by hand (no launch id) is a member that nobody releases.
            started = next((s for s in pool.starting if s.launch_id == launch_id), None)
            if launch_id and started is not None:
                pool.starting.remove(started)
                started.stop_watching()
                handle = started.handle
            elif launch_id and pool.in_flight:
                pool.registered_early[launch_id] = agent.id
            pool.members[agent.id] = handle
        pool.error, pool.backoff = "", BACKOFF_START_S
        self.kick()

    def agent_disconnected(self, agent: AgentState) -> None:
        pool = self._board.pool_of(agent)
        if agent.releasing and pool is not None and agent.id in pool.members:
            # A released agent finished and left: make sure its process/allocation ends.
            handle = pool.members.pop(agent.id)
            if handle is not None:
                self._spawn(self.provider_of(pool).release(handle))
        self.kick()

    def agent_lost(self, agent: AgentState) -> None:
        pool = self._board.pool_of(agent)
        if pool is not None and agent.id in pool.members:
            handle = pool.members.pop(agent.id)
            if handle is not None:
                self._spawn(self.provider_of(pool).release(handle))
        self.kick()

    # -- the reconcile pass ----------------------------------------------------------------
    def _members(self, pool: Pool) -> list[AgentState]:
        states = self._scheduler.known_agents()
        return [a for a in states if a.id in pool.members and a.connected and not a.releasing]

    def _demand(self, pool: Pool) -> int:
        return sum(
            1
            for job in self._scheduler.pending_jobs()
            if job.state == State.PENDING
            and not job.hold_agent_id
            and fits(job.spec, pool.caps, self._classes)
        )

    def _reconcile(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        now = time.monotonic()
        for pool in self.pools:
            policy = pool.policy
            members = self._members(pool)
            idle = [a for a in members if a.free and not a.running]
            demand = self._demand(pool)
            supply = len(idle) + len(pool.starting) + pool.in_flight
            wanted = demand if demand else policy.baseline
            room = policy.cap - len(members) - len(pool.starting) - pool.in_flight
            grow = min(max(0, wanted - supply), room)
            if grow and now >= pool.retry_at:
                for _ in range(grow):
                    pool.in_flight += 1
                    self._spawn(self._provision(pool))
            elif grow:
                self._later(pool.retry_at - now)
            if not demand and len(idle) > policy.baseline:
                idle.sort(key=lambda a: a.idle_since)
                extra = idle[: len(idle) - policy.baseline]
                for agent in extra:
                    due = agent.idle_since + policy.idle_timeout_s
                    if due <= now:
                        log.info("pool %s: releasing idle agent %s", policy.name, agent.id)
                        self._scheduler.release(agent)
                    else:
                        self._later(due - now)
        self._scheduler.refresh_pending()

    async def _provision(self, pool: Pool) -> None:
        launch_id = f"{pool.policy.name}-{secrets.token_hex(6)}"
        try:
            handle = await self.provider_of(pool).provision(
                pool.policy.profile, pool.caps.gpu_count, launch_id
            )
        except ProvisionError as exc:
            pool.in_flight -= 1
            self._forget_early(pool)
            self._failed(pool, str(exc))
            return
        pool.in_flight -= 1
        early = pool.registered_early.pop(launch_id, None)
        self._forget_early(pool)
        if self._closed:
            await self.provider_of(pool).release(handle)
            return
        if early is not None:  # it registered before provision() returned
            if early in pool.members:
                pool.members[early] = handle
            else:  # and has already left again
                self._spawn(self.provider_of(pool).release(handle))
            self.kick()
            return
        what = self.provider_of(pool).describe(handle)
        started = Starting(
            handle, launch_id, time.monotonic(), f"{what}, waiting for it to register"
        )
        loop = asyncio.get_running_loop()
        started.timer = loop.call_later(
            pool.policy.register_timeout_s, self._register_timeout, pool, started
        )
        started.watcher = loop.create_task(self._watch(pool, started))
        self._watchers.add(started.watcher)
        started.watcher.add_done_callback(self._watchers.discard)
        pool.starting.append(started)
        self.kick()

    @staticmethod
    def _forget_early(pool: Pool) -> None:
        # With no provision() left in flight, no start can claim an early registration
        # (e.g. a late agent of a start that timed out): drop them, do not keep them.
        if not pool.in_flight:
            pool.registered_early.clear()

    async def _watch(self, pool: Pool, started: Starting) -> None:
        def progress(phrase: str) -> None:
            if phrase != started.phrase:
                started.phrase = phrase
                self.kick()  # pending jobs re-read message_for

        try:
            await self.provider_of(pool).watch_start(started.handle, progress)
        except ProvisionError as exc:
            if started in pool.starting and not self._closed:
                pool.starting.remove(started)
                started.watcher = None  # this task, ending now
                started.stop_watching()
                self._spawn(self.provider_of(pool).release(started.handle))
                self._failed(pool, str(exc))
        except Exception:  # a provider bug must not end the pool; the timeout still runs
            log.exception("pool %s: watching %s failed", pool.policy.name, started.phrase)

    def _failed(self, pool: Pool, why: str) -> None:
        log.warning("pool %s: %s", pool.policy.name, why)
        pool.error = why
        pool.retry_at = time.monotonic() + pool.backoff
        self._later(pool.backoff)
        pool.backoff = min(pool.backoff * 2, _BACKOFF_MAX_S)
        self.kick()

    def _register_timeout(self, pool: Pool, started: Starting) -> None:
        if started not in pool.starting:
            return
        pool.starting.remove(started)
        started.stop_watching()
        self._spawn(self.provider_of(pool).release(started.handle))
        what = self.provider_of(pool).describe(started.handle)
        self._failed(
            pool, f"{what} did not register within {pool.policy.register_timeout_s:.0f}s"
        )

    # -- plumbing --------------------------------------------------------------------------
    def _later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(loop.call_later(max(0.0, delay) + 0.01, self.kick))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop everything this coordinator started (on shutdown)."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for task in list(self._tasks):
            if not task.done():
                await asyncio.gather(task, return_exceptions=True)
        releases = []
        for pool in self.pools:
            handles = [s.handle for s in pool.starting] + [
                h for h in pool.members.values() if h is not None
            ]
            for started in pool.starting:
                started.stop_watching()
            pool.starting.clear()
            pool.members.clear()
            releases += [self.provider_of(pool).release(h) for h in handles]
        await asyncio.gather(*releases, return_exceptions=True)
