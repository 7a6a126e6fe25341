"""Log lines sent to the coordinator that it may not have persisted yet.

The coordinator commits log events in groups, so a line it received can still vanish if
it is killed before the commit. The agent therefore keeps, per job, the lines it sent
(each numbered by LogLine.index) and resends those at or after the index the coordinator
names in ResumeLogs when a stream opens; the coordinator drops the repeats.

Memory is bounded: per job at most `max_lines` lines and `max_bytes` bytes of text are
kept; beyond that the oldest are forgotten first, and a coordinator crash that loses
lines older than what is kept loses them for good. A finished job's lines are kept (its
last lines may not be committed yet) until a ResumeLogs no longer names the job, and for
at most `max_finished` finished jobs, oldest forgotten first. The same goes for a finished
job's final status report: a coordinator that died before committing it hears it again.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from c3.v1 import agent_pb2, common_pb2

MAX_KEPT_LINES = 10_000
MAX_KEPT_BYTES = 8 << 20
MAX_FINISHED_JOBS = 4


@dataclass
class _Kept:
    lines: deque[common_pb2.LogLine] = field(default_factory=deque)
    bytes: int = 0
    finished: bool = False
    final: agent_pb2.JobStatusUpdate | None = None


class LogJournal:
    def __init__(self, max_lines: int = MAX_KEPT_LINES, max_bytes: int = MAX_KEPT_BYTES,
                 max_finished: int = MAX_FINISHED_JOBS) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.max_finished = max_finished
        self._jobs: OrderedDict[str, _Kept] = OrderedDict()

    def record(self, batch: agent_pb2.LogBatch) -> None:
        """Keep the numbered lines of a batch that is being sent."""
        kept = self._jobs.get(batch.job_id)
        if kept is None:
            kept = self._jobs[batch.job_id] = _Kept()
        for line in batch.lines:
            if not line.index:
                continue
            kept.lines.append(line)
            kept.bytes += len(line.text)
        while kept.lines and (len(kept.lines) > self.max_lines or kept.bytes > self.max_bytes):
            kept.bytes -= len(kept.lines.popleft().text)

    def finished(self, job_id: str) -> None:
        """The job ended; its lines stay until the coordinator stops asking for them."""
        kept = self._jobs.get(job_id)
        if kept is None:
            return
        kept.finished = True
        self._jobs.move_to_end(job_id)
        finished = [j for j, k in self._jobs.items() if k.finished]
        for old in finished[: max(0, len(finished) - self.max_finished)]:
            del self._jobs[old]

    def final_status(self, update: agent_pb2.JobStatusUpdate) -> None:
        """Keep a finished job's final report until the coordinator stops asking about it."""
        kept = self._jobs.get(update.job_id)
        if kept is None:
            kept = self._jobs[update.job_id] = _Kept()
            self.finished(update.job_id)
        kept.final = update

    def final_of(self, job_id: str) -> agent_pb2.JobStatusUpdate | None:
        kept = self._jobs.get(job_id)
        return kept.final if kept is not None else None

    def resume(self, job_id: str, next_index: int) -> list[common_pb2.LogLine]:
        """Forget the lines below `next_index` (the coordinator holds them durably) and
        return the rest, oldest first, to be sent again."""
        kept = self._jobs.get(job_id)
        if kept is None:
            return []
        while kept.lines and kept.lines[0].index < next_index:
            kept.bytes -= len(kept.lines.popleft().text)
        return list(kept.lines)

    def forget_finished_except(self, job_ids: Iterable[str]) -> None:
        """Drop finished jobs the coordinator no longer asks about."""
        wanted = set(job_ids)
        for job_id in [j for j, k in self._jobs.items() if k.finished and j not in wanted]:
            del self._jobs[job_id]

    def kept_lines(self, job_id: str) -> int:
        kept = self._jobs.get(job_id)
        return len(kept.lines) if kept is not None else 0
