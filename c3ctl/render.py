"""How c3ctl shows things: job events, tables, sizes, one-line errors."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

from c3.v1 import common_pb2, daemon_pb2

_no_color = bool(os.environ.get("NO_COLOR"))
# Piped output is not wrapped at 80 columns: tables stay one row per line for grep/awk.
err = Console(stderr=True, highlight=False, no_color=_no_color, soft_wrap=True,
              width=None if sys.stderr.isatty() else 4096)
out = Console(highlight=False, no_color=_no_color, soft_wrap=True,
              width=None if sys.stdout.isatty() else 4096)

STATE_COLORS = {
    "PENDING": "yellow", "SCHEDULING": "yellow", "RUNNING": "cyan", "COMPLETED": "green",
    "SYNCED": "green", "FAILED": "red", "CANCELED": "magenta", "TIMED_OUT": "red",
}


def state_name(state: int) -> str:
    return common_pb2.JobState.Name(common_pb2.JobState.ValueType(state)).removeprefix("JOB_STATE_")


def reason_name(reason: int) -> str:
    return common_pb2.FailureReason.Name(common_pb2.FailureReason.ValueType(reason)).removeprefix("FAILURE_REASON_")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def money(minor: int, currency: str) -> str:
    symbol = {"GBP": "£", "USD": "$", "EUR": "€"}.get(currency or "GBP", "")
    return f"{'-' if minor < 0 else ''}{symbol}{abs(minor) / 100:.2f}"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_line(state: int, reason: int = 0, exit_code: int = 0, message: str = "") -> str:
    name = state_name(state)
    text = f"[{STATE_COLORS.get(name, 'white')}]● {name}[/]"
    if state == common_pb2.JOB_STATE_FAILED:
        text += f" ({reason_name(reason)}"
        if reason == common_pb2.FAILURE_REASON_EXIT_CODE:
            text += f" {exit_code}"
        text += ")"
    if message:
        text += f" [dim]{escape(message)}[/]"
    return text


def job_event(event: common_pb2.JobEvent) -> None:
    if event.HasField("log") and event.log.stream == common_pb2.LOG_STREAM_SYSTEM and event.seq == 0:
        err.print(f"[yellow]{escape(event.log.text)}[/]")  # from c3 itself: reconnects
    elif event.HasField("log"):
        stream = sys.stderr if event.log.stream == common_pb2.LOG_STREAM_STDERR else sys.stdout
        stream.write(event.log.text if event.log.text.endswith("\n") else event.log.text + "\n")
        stream.flush()
    elif event.HasField("status"):
        s = event.status
        err.print(status_line(s.state, s.failure_reason, s.exit_code, s.message))
    elif event.HasField("truncated_bytes"):
        err.print(f"[yellow]… {human_bytes(event.truncated_bytes)} of output dropped (log limit)[/]")


_bar: Progress | None = None
_bar_task: TaskID | None = None


def progress(update: daemon_pb2.Progress) -> None:
    """A transient progress bar on stderr, only on a terminal."""
    global _bar, _bar_task
    if not sys.stderr.isatty() or update.total == 0:
        return
    if _bar is None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        _bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), console=err, transient=True,
        )
        _bar.start()
        _bar_task = _bar.add_task(update.phase, total=update.total)
    assert _bar_task is not None
    _bar.update(_bar_task, completed=update.done, total=update.total, description=update.phase)


def progress_done() -> None:
    global _bar, _bar_task
    if _bar is not None:
        _bar.stop()
        _bar, _bar_task = None, None


def push_stats(stats: daemon_pb2.PushStats) -> str:
    return (
        f"pushed {stats.files_scanned} files ({human_bytes(stats.bytes_total)}): "
        f"{stats.files_hashed} hashed, {stats.blobs_new} new, "
        f"{human_bytes(stats.bytes_sent)} sent in {stats.seconds:.2f}s"
    )


def runtime_of(job: common_pb2.Job) -> float:
    if job.runtime_seconds:
        return job.runtime_seconds
    if job.started_at.seconds:
        end = job.finished_at.ToSeconds() if job.finished_at.seconds else time.time()
        return max(0.0, end - job.started_at.ToSeconds())
    return 0.0


def _info(job: common_pb2.Job) -> str:
    """Why a job waits or why it ended badly; nothing for a job that is fine."""
    if job.state == common_pb2.JOB_STATE_FAILED:
        reason = reason_name(job.failure_reason)
        if job.failure_reason == common_pb2.FAILURE_REASON_EXIT_CODE:
            reason += f" {job.exit_code}"
        return f"{reason}: {job.message}" if job.message else reason
    if job.state in (common_pb2.JOB_STATE_PENDING, common_pb2.JOB_STATE_CANCELED,
                     common_pb2.JOB_STATE_TIMED_OUT):
        return job.message
    return ""


def array_label(spec: common_pb2.JobSpec) -> str:
    """An array member's place, "[i/N]"; empty for a job outside any array."""
    return f"[{spec.array_index}/{spec.array_size}]" if spec.array_size else ""


def job_name(spec: common_pb2.JobSpec) -> str:
    """The NAME column: job_name (or "-"), with "[i/N]" for a member of an array."""
    name = spec.job_name or ("" if spec.array_size else "-")
    return name + array_label(spec)


def jobs_table(jobs: list[common_pb2.Job]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "PROJECT", "NAME", "STATUS", "GPU", "RUNTIME", "INFO"):
        table.add_column(column)
    for job in jobs:
        name = state_name(job.state)
        table.add_row(
            job.id,
            job.spec.project,
            escape(job_name(job.spec)),
            f"[{STATE_COLORS.get(name, 'white')}]{name}[/]",
            job.gpu_profile or job.spec.gpu or "any",
            human_duration(runtime_of(job)),
            escape(_info(job)),
        )
    return table
