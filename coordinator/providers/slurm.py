"""`slurm`: an agent submitted as a Slurm batch job; released with scancel."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
from typing import Any

from coordinator.providers.base import AgentLaunch, ProvisionError

log = logging.getLogger(__name__)


async def _run(*argv: str) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc.strerror or exc}"
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class SlurmProvider:
    name = "slurm"

    def __init__(
        self,
        launch: AgentLaunch,
        partition: str = "",
        sbatch_args: tuple[str, ...] = (),
        extra_agent_args: tuple[str, ...] = (),
    ) -> None:
        self._launch = launch
        self._partition = partition
        self._sbatch_args = sbatch_args
        self._extra = extra_agent_args
        self._counter = itertools.count(1)

    def script(self, profile: str, gpu_count: int, n: int) -> str:
        base = self._launch.work_dir
        data_dir = f"{base}/slurm-{profile}-{n}-$SLURM_JOB_ID"
        argv = self._launch.argv(self.name, profile, "DATA_DIR") + list(self._extra)
        command = " ".join(shlex.quote(a) for a in argv).replace("DATA_DIR", f'"{data_dir}"')
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name=c3-agent-{profile}",
            f"#SBATCH --output={base}/slurm-%j.out",
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

    async def provision(self, profile: str, gpu_count: int) -> Any:
        n = next(self._counter)
        self._launch.work_dir.mkdir(parents=True, exist_ok=True)
        path = self._launch.work_dir / f"slurm-agent-{profile}-{n}.sh"
        path.write_text(self.script(profile, gpu_count, n))
        rc, out, err = await _run("sbatch", "--parsable", str(path))
        if rc != 0:
            detail = (err.strip() or out.strip() or f"exit status {rc}").splitlines()[-1]
            raise ProvisionError(f"sbatch failed: {detail}")
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise ProvisionError(f"sbatch printed no job id: {out.strip()!r}")
        log.info("slurm job %s submitted for a %s agent", job_id, profile)
        return job_id

    async def release(self, handle: Any) -> None:
        rc, _, err = await _run("scancel", str(handle))
        if rc != 0:
            log.warning("scancel %s failed: %s", handle, err.strip())

    def describe(self, handle: Any) -> str:
        return f"Slurm job {handle}"
