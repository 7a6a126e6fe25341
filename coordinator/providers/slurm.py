"""`slurm`: an agent submitted as a Slurm batch job; released with scancel.

While agents are starting, one poller asks `squeue` about all of their jobs at once,
every `status_interval_s`: Slurm pushes nothing, and this is the only polling in the
pool. It runs only while some agent is starting, never on the job path, and stops when
the last start registered, failed or was released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.providers.base import AgentLaunch, ProvisionError, last_line

log = logging.getLogger(__name__)

DEFAULT_STATUS_INTERVAL_S = 2.0

# Job states after which the batch script (the agent) no longer runs.
_ENDED = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT",
})  # fmt: skip


async def _run(*argv: str) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc.strerror or exc}"
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:  # the pool stopped watching: leave no child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@dataclass(eq=False)
class _Watch:
    on_progress: Callable[[str], None]
    ended: asyncio.Future[None]


class SlurmProvider:
    name = "slurm"

    def __init__(
        self,
        launch: AgentLaunch,
        partition: str = "",
        sbatch_args: tuple[str, ...] = (),
        extra_agent_args: tuple[str, ...] = (),
        status_interval_s: float = DEFAULT_STATUS_INTERVAL_S,
    ) -> None:
        self._launch = launch
        self._partition = partition
        self._sbatch_args = sbatch_args
        self._extra = extra_agent_args
        self._interval = status_interval_s
        self._counter = itertools.count(1)
        self._watches: dict[str, _Watch] = {}  # Slurm job id -> its watcher
        self._poller: asyncio.Task[None] | None = None
        self._ended: set[str] = set()  # jobs seen ended: nothing left to scancel

    def script(self, profile: str, gpu_count: int, n: int, launch_id: str) -> str:
        base = self._launch.work_dir
        data_dir = f"{base}/slurm-{profile}-{n}-$SLURM_JOB_ID"
        argv = self._launch.argv(self.name, profile, "DATA_DIR", launch_id) + list(self._extra)
        command = " ".join(shlex.quote(a) for a in argv).replace("DATA_DIR", f'"{data_dir}"')
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name=c3-agent-{profile}",
            f"#SBATCH --output={self.output_file('%j')}",
            f"#SBATCH --chdir={base}",
            "#SBATCH --ntasks=1",
        ]
        if gpu_count:
            lines.append(f"#SBATCH --gres=gpu:{gpu_count}")
        if self._partition:
            lines.append(f"#SBATCH --partition={self._partition}")
        lines += [f"#SBATCH {a}" for a in self._sbatch_args]
        lines += [f'mkdir -p "{data_dir}"', f"exec {command}", ""]
        return "\n".join(lines)

    def output_file(self, job_id: str) -> Path:
        return self._launch.work_dir / f"slurm-{job_id}.out"

    async def provision(self, profile: str, gpu_count: int, launch_id: str) -> Any:
        n = next(self._counter)
        self._launch.work_dir.mkdir(parents=True, exist_ok=True)
        path = self._launch.work_dir / f"slurm-agent-{profile}-{n}.sh"
        path.write_text(self.script(profile, gpu_count, n, launch_id))
        rc, out, err = await _run("sbatch", "--parsable", str(path))
        if rc != 0:
            raise ProvisionError(f"sbatch failed: {_last(err) or _last(out) or f'exit status {rc}'}")
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise ProvisionError(f"sbatch printed no job id: {out.strip()!r}")
        log.info("slurm job %s submitted for a %s agent", job_id, profile)
        return job_id

    async def watch_start(self, handle: Any, on_progress: Callable[[str], None]) -> None:
        job_id = str(handle)
        watch = _Watch(on_progress, asyncio.get_running_loop().create_future())
        self._watches[job_id] = watch
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            await watch.ended
        finally:
            if self._watches.get(job_id) is watch:
                del self._watches[job_id]
            if not self._watches and self._poller is not None:
                poller, self._poller = self._poller, None
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)

    async def _poll(self) -> None:
        while self._watches:
            ids = list(self._watches)
            # `-t all` keeps finished jobs listed for as long as slurmctld remembers them
            # (MinJobAge), the same table `scontrol show job` reads; with several ids
            # squeue leaves out those it no longer knows, with one it says so and fails.
            rc, out, err = await _run(
                "squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"
            )
            if rc != 0 and "Invalid job id" not in err:
                for job_id in ids:
                    self._progress(job_id, f"Slurm job {job_id}, squeue failed: {_last(err)}")
            else:
                listed: dict[str, tuple[str, str]] = {}
                for line in out.splitlines():
                    job_id, _, rest = line.strip().partition("|")
                    state, _, reason = rest.partition("|")
                    listed[job_id] = (state.split()[0] if state else "", reason)
                for job_id in ids:
                    if job_id in self._watches:  # not registered or released meanwhile
                        state, reason = listed.get(job_id, ("", ""))
                        await self._update(job_id, state, reason)
            await asyncio.sleep(self._interval)

    def _progress(self, job_id: str, phrase: str) -> None:
        watch = self._watches.get(job_id)
        if watch is not None and not watch.ended.done():
            watch.on_progress(phrase)

    async def _update(self, job_id: str, state: str, reason: str) -> None:
        if state and state not in _ENDED:
            if state == "RUNNING":
                self._progress(job_id, f"Slurm job {job_id} RUNNING, waiting for it to register")
            elif reason and reason != "None":
                self._progress(job_id, f"Slurm job {job_id} {state}: {reason}")
            else:
                self._progress(job_id, f"Slurm job {job_id} {state}")
            return
        out = self.output_file(job_id)
        last = await asyncio.to_thread(last_line, out)
        watch = self._watches.get(job_id)
        if watch is not None and not watch.ended.done():
            # The pool releases it next; a job released meanwhile must not stay listed here.
            self._ended.add(job_id)
            watch.ended.set_exception(ProvisionError(
                f"Slurm job {job_id} ended ({state or 'no longer known to Slurm'}) before its "
                f"agent registered" + (f": {last}" if last else "") + f"; see {out}"
            ))  # fmt: skip

    async def release(self, handle: Any) -> None:
        job_id = str(handle)
        if job_id in self._ended:
            self._ended.discard(job_id)
            return
        rc, _, err = await _run("scancel", job_id)
        if rc != 0:
            log.warning("scancel %s failed: %s", job_id, err.strip())

    def describe(self, handle: Any) -> str:
        return f"Slurm job {handle}"
