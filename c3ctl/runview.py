"""How a followed run looks (`watch`, `deploy -f`, `run`, `logs`).

Compact (the default): one header line per run, one timing line just before the job's
first output line, the job's output, and one footer line; while the job waits or starts,
one status line on a terminal that is updated in place and gone once output comes.
Verbose: every state change and c3 message as well. Quiet: the job's output only.

The job's stdout and stderr go to ours. Where both end up in the same place (a terminal,
or `2>&1` into one pipe or file) stderr lines are told apart: in colour on a terminal,
with a prefix otherwise (or with NO_COLOR).
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
from typing import TextIO

import click
from rich.markup import escape

from c3.v1 import common_pb2, daemon_pb2
from c3ctl import render

STDERR_PREFIX = "[stderr] "
_STDERR_COLOR, _RESET, _DIM = "\x1b[31m", "\x1b[0m", "\x1b[2m"
_CLEAR_LINE = "\r\x1b[2K"
SUCCESS = (common_pb2.JOB_STATE_COMPLETED, common_pb2.JOB_STATE_SYNCED)
_OUTPUT = (common_pb2.LOG_STREAM_STDOUT, common_pb2.LOG_STREAM_STDERR)
_FINAL = frozenset({*SUCCESS, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELED,
                    common_pb2.JOB_STATE_TIMED_OUT})
# Paths a header line names before "and N more".
HEADER_PATHS = 3
# Why an exit code is what it is, for the footer of a failed job.
_EXIT_MEANING = {126: "cannot execute", 127: "command not found"}


class Mode(enum.Enum):
    COMPACT = "compact"
    VERBOSE = "verbose"
    QUIET = "quiet"


def mode_of(verbose: bool, quiet: bool) -> Mode:
    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet exclude each other")
    return Mode.VERBOSE if verbose else Mode.QUIET if quiet else Mode.COMPACT


def _same_destination(a: TextIO, b: TextIO) -> bool:
    try:
        one, two = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError):
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)


def colour_allowed(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def human_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def human_runtime(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else render.human_duration(seconds)


def header_line(header: daemon_pb2.RunHeader) -> str:
    parts = [f"run {header.run}"] if header.run else []
    parts.append(header.job_id)
    if header.first:
        parts.append(f"{header.files} files ({render.human_bytes(header.bytes_total)})")
    elif header.changed_total == 0:
        parts.append("nothing changed")
    else:
        shown = list(header.changed[:HEADER_PATHS])
        more = header.changed_total - len(shown)
        parts.append(", ".join(shown) + (f" and {more} more" if more > 0 else ""))
    parts.append(f"{render.human_bytes(header.bytes_sent)} sent")
    return f"── {' · '.join(parts)} ──"


def timing_line(timing: daemon_pb2.RunTiming) -> str:
    since = {"save": "the save", "command": "the command", "watch": "watch started",
             "submit": "submit"}.get(
        timing.since, timing.since)
    steps = [("push", timing.push_ms)] if timing.since != "submit" else []
    steps += [("queue", timing.queue_ms), ("fetch", timing.fetch_ms),
              ("env", timing.environment_ms), ("start", timing.start_ms)]
    breakdown = " · ".join(f"{name} {human_ms(ms)}" for name, ms in steps)
    warm = "" if timing.warm_pool_hit else " · cold agent"
    return f"first output {human_ms(timing.first_output_ms)} after {since} ({breakdown}{warm})"


def failure_reason(state: int, reason: int, exit_code: int, message: str) -> str:
    """Why a job ended badly, in one line; empty for a job that completed."""
    if state in SUCCESS:
        return ""
    if state == common_pb2.JOB_STATE_FAILED:
        why = render.reason_name(reason)
        if reason == common_pb2.FAILURE_REASON_EXIT_CODE:
            why += f" {exit_code}"
            meaning = _EXIT_MEANING.get(exit_code)
            return f"{why}: {meaning}" if meaning else why  # the message only repeats it
        return f"{why}: {message}" if message else why
    return message


def footer_line(job: common_pb2.Job, summary: daemon_pb2.RunSummary | None) -> str:
    name = render.state_name(job.state)
    text = f"[{render.STATE_COLORS.get(name, 'white')}]● {name}[/] {job.id}"
    why = failure_reason(job.state, job.failure_reason, job.exit_code, job.message)
    if why:
        text += f" ({escape(why)})"
    text += f" · {human_runtime(render.runtime_of(job))}"
    if job.started_at.seconds or job.cost_minor:
        text += f" · {render.money(job.cost_minor, summary.currency if summary else '')}"
    if job.state in SUCCESS and (summary is None or not summary.HasField("artifact_files")
                                 or summary.artifact_files):
        count = summary.artifact_files if summary and summary.HasField("artifact_files") else 0
        files = f"{count} artifact file{'s' if count != 1 else ''}: " if count else ""
        text += f" · {files}c3 pull {job.id}"
    return text


def status_footer(status: common_pb2.StatusChange, job_id: str) -> str:
    """A footer from the final status event alone (no final record: offline)."""
    name = render.state_name(status.state)
    text = f"[{render.STATE_COLORS.get(name, 'white')}]● {name}[/] {job_id}"
    why = failure_reason(status.state, status.failure_reason, status.exit_code, status.message)
    return text + (f" ({escape(why)})" if why else "")


def event_json(event: common_pb2.JobEvent) -> str:
    """One job event as one JSON line (`c3 logs --json`)."""
    data: dict[str, object] = {"job_id": event.job_id, "seq": event.seq,
                               "at": _iso(event.at) if event.at.seconds else None}
    if event.HasField("log"):
        line = event.log
        data.update(kind="log", stream=common_pb2.LogStream.Name(line.stream)
                    .removeprefix("LOG_STREAM_").lower(), text=line.text.removesuffix("\n"))
        if line.at.seconds:
            data["at"] = _iso(line.at)
    elif event.HasField("status"):
        s = event.status
        data.update(kind="status", state=render.state_name(s.state), message=s.message or None)
        if s.state == common_pb2.JOB_STATE_FAILED:
            data.update(failure_reason=render.reason_name(s.failure_reason), exit_code=s.exit_code)
    elif event.HasField("truncated_bytes"):
        data.update(kind="truncated", bytes=event.truncated_bytes)
    return json.dumps(data)


def _iso(ts: object) -> str:
    from google.protobuf.timestamp_pb2 import Timestamp

    assert isinstance(ts, Timestamp)
    dt = ts.ToDatetime()
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class StatusLine:
    """One line on a terminal's stderr, rewritten in place and cleared before anything
    else is written; nothing at all off a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.dim = colour_allowed(sys.stderr)
        self.shown = False

    def show(self, text: str) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        text = " ".join(text.split())[: max(10, width - 1)]
        sys.stderr.write(_CLEAR_LINE + (f"{_DIM}{text}{_RESET}" if self.dim else text))
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write(_CLEAR_LINE)
            sys.stderr.flush()
            self.shown = False


class RunView:
    """Prints a run's DeployEvents in one of the three modes. `handle` returns the job once
    an event says it finished; `end` closes the view (a footer from the last status when
    no final record came)."""

    def __init__(self, mode: Mode, *, follow: bool = True, as_json: bool = False,
                 timestamps: bool = False) -> None:
        self.mode = mode
        self.follow = follow
        self.as_json = as_json
        self.timestamps = timestamps
        self.status = StatusLine()
        same = _same_destination(sys.stdout, sys.stderr)
        marked = same and mode is not Mode.QUIET
        self.stderr_colour = marked and colour_allowed(sys.stderr)
        self.stderr_prefix = marked and not self.stderr_colour
        self._final: common_pb2.JobEvent | None = None
        self._footer_shown = False

    # -- writing ---------------------------------------------------------------------
    def chrome(self, markup: str) -> None:
        """A line of c3's own, on stderr."""
        self.status.clear()
        render.progress_done()
        render.err.print(markup)

    def output(self, event: common_pb2.JobEvent) -> None:
        """A line of the job's output, to our stdout or stderr."""
        self.status.clear()
        line = event.log
        text = line.text if line.text.endswith("\n") else line.text + "\n"
        if self.timestamps:
            stamp = _iso(line.at if line.at.seconds else event.at) + " "
            text = "".join(stamp + part for part in text.splitlines(keepends=True))
        if line.stream == common_pb2.LOG_STREAM_STDERR:
            if self.stderr_colour:
                text = "".join(f"{_STDERR_COLOR}{part.removesuffix(chr(10))}{_RESET}\n"
                               for part in text.splitlines(keepends=True))
            elif self.stderr_prefix:
                text = "".join(STDERR_PREFIX + part for part in text.splitlines(keepends=True))
            sys.stderr.write(text)
            sys.stderr.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    # -- events ----------------------------------------------------------------------
    def handle(self, event: daemon_pb2.DeployEvent) -> common_pb2.Job | None:
        kind = event.WhichOneof("kind")
        quiet, verbose = self.mode is Mode.QUIET, self.mode is Mode.VERBOSE
        if kind == "progress":
            if not quiet:
                render.progress(event.progress)
        elif kind == "error":
            self.chrome(f"[red]error:[/] {escape(event.error)}")
        elif kind == "job_event":
            self._job_event(event.job_event)
        elif kind == "finished":
            return self._finished(event.finished, event.summary if event.HasField("summary") else None)
        elif quiet:
            pass
        elif kind == "header":
            if self.follow:  # `deploy` without -f says what it always said
                self.chrome(f"[bold]{escape(header_line(event.header))}[/]")
        elif kind == "timing":
            self.chrome(f"[dim]{escape(timing_line(event.timing))}[/]")
        elif kind == "waiting":
            if verbose or not self.status.tty:
                self.chrome(f"[yellow]waiting: {escape(event.waiting)}[/]")
            else:
                self.status.show(f"PENDING: {event.waiting}")
        elif verbose:
            self._verbose(event)
        return None

    def _verbose(self, event: daemon_pb2.DeployEvent) -> None:
        """The lines c3 printed before the compact view: push stats, notices, submitted."""
        kind = event.WhichOneof("kind")
        if kind == "pushed":
            render.progress_done()
            if not self.as_json:
                self.chrome(f"[dim]{render.push_stats(event.pushed)}[/]")
        elif kind == "notice":
            self.chrome(f"[dim]{escape(event.notice)}[/]")
        elif kind == "submitted":
            job = event.submitted
            if self.as_json:
                from c3ctl.cmd_deploy import job_summary

                click.echo(json.dumps(job_summary(job)))
            else:
                member = f" {escape(render.array_label(job.spec))}" if job.spec.array_size else ""
                self.chrome(
                    f"submitted [bold]{job.id}[/]{member} ({job.spec.project}, gpu {job.spec.gpu or 'any'})"
                )
                if not self.follow:
                    click.echo(job.id)

    def _job_event(self, event: common_pb2.JobEvent) -> None:
        if event.HasField("status") and event.status.state in _FINAL:
            self._final = event
        if event.HasField("log") and event.log.stream in _OUTPUT:
            self.output(event)
            return
        if self.mode is Mode.QUIET:
            return
        if self.mode is Mode.VERBOSE:
            self.status.clear()
            render.job_event(event)  # as c3 showed every event before the compact view
            return
        if event.HasField("log") and event.seq == 0:  # from c3d itself: reconnects
            self.chrome(f"[yellow]{escape(event.log.text)}[/]")
        elif event.HasField("log"):  # the agent's own messages: where the start stands
            self.status.show(event.log.text.strip())
        elif event.HasField("status") and event.status.state not in _FINAL:
            s = event.status
            self.status.show(render.state_name(s.state) + (f": {s.message}" if s.message else ""))
        elif event.HasField("truncated_bytes"):
            self.chrome(f"[yellow]… {render.human_bytes(event.truncated_bytes)} of output dropped (log limit)[/]")

    def _finished(self, job: common_pb2.Job, summary: daemon_pb2.RunSummary | None) -> common_pb2.Job:
        if self.mode is Mode.VERBOSE:
            if job.state in SUCCESS:
                self.chrome(f"[dim]artifacts: c3ctl pull {job.id}[/]")
        elif self.mode is Mode.COMPACT:
            self.chrome(footer_line(job, summary))
        self._footer_shown = True
        return job

    def end(self) -> None:
        self.status.clear()
        render.progress_done()
        if self.mode is Mode.COMPACT and not self._footer_shown and self._final is not None:
            self.chrome(status_footer(self._final.status, self._final.job_id))
            self._footer_shown = True
