"""The agent's kept log lines: numbered, bounded, resent from the coordinator's point."""

from __future__ import annotations

import asyncio

import pytest

from agent.logbatch import LogBatcher
from agent.logjournal import LogJournal
from c3.v1 import agent_pb2, common_pb2

pytestmark = pytest.mark.unit


def batch(job_id: str, first: int, count: int) -> agent_pb2.LogBatch:
    return agent_pb2.LogBatch(job_id=job_id, lines=[
        common_pb2.LogLine(text=f"l{i}", index=i) for i in range(first, first + count)
    ])  # fmt: skip


async def test_batcher_numbers_lines_from_one() -> None:
    sent: list[agent_pb2.LogBatch] = []

    async def send(b: agent_pb2.LogBatch) -> None:
        sent.append(b)

    logs = LogBatcher("j", send)
    logs.start()
    for i in range(5):
        logs.system(f"line {i}")
    await logs.close()
    assert [line.index for b in sent for line in b.lines] == [1, 2, 3, 4, 5]


async def test_resume_resends_from_index_and_forgets_below() -> None:
    journal = LogJournal()
    journal.record(batch("j", 1, 8))
    assert [line.index for line in journal.resume("j", 6)] == [6, 7, 8]
    assert [line.index for line in journal.resume("j", 1)] == [6, 7, 8]  # 1..5 acknowledged
    assert journal.resume("other", 1) == []
    await asyncio.sleep(0)


def test_bounds_forget_oldest_lines_and_finished_jobs() -> None:
    journal = LogJournal(max_lines=3, max_finished=1)
    journal.record(batch("a", 1, 5))
    assert [line.index for line in journal.resume("a", 1)] == [3, 4, 5]
    journal.record(batch("b", 1, 2))
    journal.finished("a")
    journal.finished("b")  # only the newest finished job is kept
    assert journal.kept_lines("a") == 0 and journal.kept_lines("b") == 2
    journal.forget_finished_except(["x"])  # the coordinator no longer asks for b
    assert journal.kept_lines("b") == 0


def test_final_status_is_kept_for_a_coordinator_that_may_not_have_it() -> None:
    from agent.logjournal import LogJournal
    from c3.v1 import agent_pb2, common_pb2

    journal = LogJournal(max_finished=2)
    report = agent_pb2.JobStatusUpdate(job_id="j-1", state=common_pb2.JOB_STATE_COMPLETED)
    journal.final_status(report)
    assert journal.final_of("j-1") == report
    # Still named by the coordinator after a restart: kept to be said again.
    journal.forget_finished_except({"j-1"})
    assert journal.final_of("j-1") == report
    # No longer named: the coordinator has it durably; forgotten.
    journal.forget_finished_except(set())
    assert journal.final_of("j-1") is None
    # Bounded: only the newest finished jobs are kept.
    for n in range(2, 6):
        journal.final_status(agent_pb2.JobStatusUpdate(job_id=f"j-{n}", state=common_pb2.JOB_STATE_FAILED))
    assert [journal.final_of(f"j-{n}") is not None for n in range(2, 6)] == [False, False, True, True]
