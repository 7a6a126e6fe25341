"""The job topic: subscribers hear every change in order, synchronously (so what they write
commits with the transition), and no transition is made while another is delivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.changes import JobChange, JobChanged, Topic
from coordinator.events import EventLog
from coordinator.jobs import JobService
from coordinator.lifecycle import State
from coordinator.repo import SqliteRepository
from tests.harness.coordinator import spec

pytestmark = pytest.mark.unit


async def test_subscribers_hear_each_change_as_it_happens_and_cannot_transition_inside_it(
    tmp_path: Path,
) -> None:
    repo = await SqliteRepository.open(tmp_path / "c.db")
    changes: Topic[JobChange] = Topic("job changes")
    jobs = JobService(repo, EventLog(repo), changes, 1 << 20, 60.0)
    heard: list[tuple[State | None, State, State]] = []
    refused: list[str] = []

    def listener(change: JobChange) -> None:
        assert isinstance(change, JobChanged)
        heard.append((change.previous, change.target, change.job.state))
        if change.target == State.PENDING and change.previous is None:
            try:  # what the scheduler must never do: move the job on from inside
                jobs.transition(change.job, State.SCHEDULING, "inside the delivery")
            except RuntimeError as exc:
                refused.append(str(exc))

    changes.subscribe(listener)
    job = await jobs.submit("org", spec())
    assert heard == [(None, State.PENDING, State.PENDING)]
    assert len(refused) == 1 and "during another's delivery" in refused[0]
    assert job.state == State.PENDING  # the refused transition changed nothing
    await jobs.cancel("org", [job.id])
    assert heard[-1] == (State.PENDING, State.CANCELED, State.CANCELED)
    jobs.close()
    await repo.close()


def test_a_subscriber_that_publishes_on_its_own_topic_is_refused() -> None:
    topic: Topic[int] = Topic("numbers")
    heard: list[int] = []

    def echo(n: int) -> None:
        heard.append(n)
        topic.publish(n + 1)

    topic.subscribe(echo)
    with pytest.raises(RuntimeError, match="numbers: published from inside"):
        topic.publish(1)
    assert heard == [1] and not topic.delivering  # and the topic still works after
    topic.subscribe(heard.append)
    with pytest.raises(RuntimeError):
        topic.publish(5)
    assert heard == [1, 5]
