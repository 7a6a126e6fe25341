"""Runs one job's script as its own process group and tells how it ended.

The whole group is stopped on cancel and on the time limit (SIGTERM, a grace period,
then SIGKILL), and any process the script left behind is killed when it exits — the
job's cgroup reaches processes that left the group (setsid), and in the sandbox the pid
namespace dies with its first process — so a job never keeps the agent busy after its
script is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import time
from dataclasses import dataclass

from agent.cgroups import JobCgroup, enter_cgroup_argv
from agent.logbatch import LogBatcher
from agent.sandbox import LaunchSpec, SandboxPolicy, launch_argv, stage_mounts
from agent.stage import Stage, hand_over
from c3.v1 import common_pb2

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 10.0
# After the script exits, how long its pipes may stay open (a leftover child holding them).
PIPE_DRAIN_SECONDS = 2.0


class Ending(enum.Enum):
    EXITED = "exited"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    DISK_LIMIT = "disk_limit"
    PIDS_LIMIT = "pids_limit"


@dataclass(frozen=True)
class RunResult:
    ending: Ending
    exit_code: int
    runtime_seconds: float
    reason: str = ""
    oom_killed: bool = False  # the kernel's OOM killer ended a process of the job
    pids_limited: bool = False  # a fork failed because the job hit its process limit


async def _process_exit(pid: int) -> None:
    """Return when `pid` has exited, without waiting for its pipes to close.

    (asyncio's Process.wait() on 3.11 also waits for stdout/stderr EOF, which a leftover
    background child can hold open forever.) A pidfd becomes readable at exit: an event,
    not a poll.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


class ScriptRun:
    """One started script. `stop()` may be called at any time from another task."""

    def __init__(self, spec: LaunchSpec, *, sandbox: SandboxPolicy | None, logs: LogBatcher,
                 time_limit_seconds: float = 0, grace_seconds: float = DEFAULT_GRACE_SECONDS,
                 cgroup: JobCgroup | None = None):
        self.spec = spec
        self.cgroup = cgroup
        self.sandbox = sandbox
        self.logs = logs
        self.time_limit_seconds = time_limit_seconds
        self.grace_seconds = grace_seconds
        self._stop = asyncio.Event()
        self._stop_ending = Ending.CANCELED
        self._stop_reason = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._stage: Stage | None = None
        self.started_at = 0.0

    def stop(self, ending: Ending = Ending.CANCELED, reason: str = "") -> None:
        if not self._stop.is_set():
            self._stop_ending, self._stop_reason = ending, reason
            self._stop.set()

    async def start(self) -> None:
        """Spawn the script (raises InvalidArgument for a bad script/workdir, OSError)."""
        launch = launch_argv(self.spec, self.sandbox)
        try:
            await asyncio.to_thread(self._stage_dirs)
        except BaseException:
            launch.close()
            raise
        argv = launch.argv
        if self.cgroup is not None:
            argv = enter_cgroup_argv(self.cgroup.procs_files, argv)
        self.started_at = time.monotonic()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=launch.cwd,
                env=launch.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group: cancel reaches every child
                pass_fds=launch.fds,
            )
        except BaseException:
            await asyncio.to_thread(self._unstage)
            raise
        finally:
            launch.close()

    def _stage_dirs(self) -> None:
        """Blocking: the job's dirs become its host uid's, then are staged for its sandbox."""
        if self.sandbox is not None and self.sandbox.host_ids is not None:
            hand_over(self.spec.layout.root, *self.sandbox.host_ids)
        self._stage = stage_mounts(self.spec, self.sandbox)

    def _unstage(self) -> None:
        if self._stage is not None:
            self._stage.unmount()
            self._stage = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def _terminate(self) -> None:
        assert self._proc is not None
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(_process_exit(self._proc.pid), timeout=self.grace_seconds)
        except TimeoutError:
            self.logs.system(f"c3: still running {self.grace_seconds:g}s after SIGTERM; killing")
        self._signal_group(signal.SIGKILL)
        await _process_exit(self._proc.pid)

    async def wait(self) -> RunResult:
        assert self._proc is not None, "start() first"
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(self.logs.pump(proc.stdout, common_pb2.LOG_STREAM_STDOUT)),
            asyncio.create_task(self.logs.pump(proc.stderr, common_pb2.LOG_STREAM_STDERR)),
        ]
        exited = asyncio.create_task(_process_exit(proc.pid))
        stopped = asyncio.create_task(self._stop.wait())
        timeout = self.time_limit_seconds or None
        try:
            done, _ = await asyncio.wait({exited, stopped}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            ending, reason = Ending.EXITED, ""
            if exited not in done:
                if stopped in done:
                    ending, reason = self._stop_ending, self._stop_reason
                else:
                    ending = Ending.TIMED_OUT
                    reason = f"time limit of {self.time_limit_seconds:g}s reached"
                self.logs.system(f"c3: stopping the job: {reason or ending.value}")
                await self._terminate()
            # Whatever the script left running dies with it (the cgroup also reaches
            # children that left the process group).
            self._signal_group(signal.SIGKILL)
            if self.cgroup is not None:
                await asyncio.to_thread(self.cgroup.kill_all)
            _, pending = await asyncio.wait(pumps, timeout=PIPE_DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            # Normally immediate; bounded in case an escaped (setsid) child holds a pipe.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), PIPE_DRAIN_SECONDS)
        finally:
            stopped.cancel()
            if not exited.done():
                self._signal_group(signal.SIGKILL)
                exited.cancel()
            await asyncio.to_thread(self._unstage)
        code = proc.returncode if proc.returncode is not None else -1
        oom = self.cgroup is not None and self.cgroup.oom_killed()
        pids = self.cgroup is not None and self.cgroup.pids_limited()
        return RunResult(ending, code, time.monotonic() - self.started_at, reason, oom, pids)


async def run_script(spec: LaunchSpec, *, sandbox: SandboxPolicy | None, logs: LogBatcher,
                     time_limit_seconds: float = 0,
                     grace_seconds: float = DEFAULT_GRACE_SECONDS) -> RunResult:
    """Start and wait (convenience for callers that never stop the run)."""
    run = ScriptRun(spec, sandbox=sandbox, logs=logs,
                    time_limit_seconds=time_limit_seconds, grace_seconds=grace_seconds)
    await run.start()
    return await run.wait()
