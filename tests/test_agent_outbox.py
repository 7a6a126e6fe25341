"""The agent's outbox sends job reports queued together as one message, in order."""

from __future__ import annotations

import pytest

from agent.connection import REPORTS_PER_MESSAGE, Outbox, as_one_message
from c3.v1 import agent_pb2, common_pb2

pytestmark = pytest.mark.unit


def status(job_id: str, state: int) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(status=agent_pb2.JobStatusUpdate(job_id=job_id, state=state))  # type: ignore[arg-type]


def logs(job_id: str, *texts: str) -> agent_pb2.AgentMessage:
    lines = [common_pb2.LogLine(text=t) for t in texts]
    return agent_pb2.AgentMessage(logs=agent_pb2.LogBatch(job_id=job_id, lines=lines))


HEARTBEAT = agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat())


async def test_reports_queued_together_become_one_message_and_stop_at_a_heartbeat() -> None:
    outbox = Outbox()
    for message in (status("j1", common_pb2.JOB_STATE_RUNNING), logs("j1", "out"),
                    status("j1", common_pb2.JOB_STATE_COMPLETED), HEARTBEAT,
                    status("j2", common_pb2.JOB_STATE_RUNNING)):  # fmt: skip
        outbox.put(message)
    first = await outbox.get()
    combined = as_one_message([first, *outbox.take_reports(1 << 20)])
    kinds = [item.WhichOneof("kind") for item in combined.reports.items]
    assert kinds == ["status", "logs", "status"]
    assert combined.reports.items[2].status.state == common_pb2.JOB_STATE_COMPLETED
    assert (await outbox.get()).HasField("heartbeat")  # heartbeats are never folded in
    alone = await outbox.get()
    assert outbox.take_reports(1 << 20) == []
    assert as_one_message([alone]) is alone  # a single report goes as it is
    await outbox.wait_empty()


async def test_a_batch_respects_its_size_and_count_bounds() -> None:
    outbox = Outbox()
    big = logs("j1", "x" * 4000)
    outbox.put(big)
    outbox.put(status("j1", common_pb2.JOB_STATE_COMPLETED))
    assert outbox.take_reports(big.ByteSize() - 1) == []  # does not fit: stays queued, in order
    assert len(outbox.take_reports(1 << 20)) == 2
    for _ in range(REPORTS_PER_MESSAGE + 5):
        outbox.put(status("j1", common_pb2.JOB_STATE_RUNNING))
    assert len(outbox.take_reports(1 << 20)) == REPORTS_PER_MESSAGE
    assert len(outbox.take_reports(1 << 20)) == 5
    await outbox.wait_empty()
