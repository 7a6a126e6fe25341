"""A job's lifecycle as an explicit state machine.

PENDING -> SCHEDULING -> RUNNING -> COMPLETED -> SYNCED, or FAILED / CANCELED / TIMED_OUT.
SCHEDULING -> PENDING is the one step back: an agent lost before the script started gives
the job back to the queue.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from c3.errors import FailedPrecondition, InvalidArgument
from c3.v1 import common_pb2


class State(enum.IntEnum):
    PENDING = common_pb2.JOB_STATE_PENDING
    SCHEDULING = common_pb2.JOB_STATE_SCHEDULING
    RUNNING = common_pb2.JOB_STATE_RUNNING
    COMPLETED = common_pb2.JOB_STATE_COMPLETED
    SYNCED = common_pb2.JOB_STATE_SYNCED
    FAILED = common_pb2.JOB_STATE_FAILED
    CANCELED = common_pb2.JOB_STATE_CANCELED
    TIMED_OUT = common_pb2.JOB_STATE_TIMED_OUT


class Reason(enum.IntEnum):
    UNSPECIFIED = common_pb2.FAILURE_REASON_UNSPECIFIED
    EXIT_CODE = common_pb2.FAILURE_REASON_EXIT_CODE
    UPLOAD_ERROR = common_pb2.FAILURE_REASON_UPLOAD_ERROR
    ENV_ERROR = common_pb2.FAILURE_REASON_ENV_ERROR
    AGENT_LOST = common_pb2.FAILURE_REASON_AGENT_LOST
    PROVISION_ERROR = common_pb2.FAILURE_REASON_PROVISION_ERROR
    OOM = common_pb2.FAILURE_REASON_OOM
    WORKSPACE_ERROR = common_pb2.FAILURE_REASON_WORKSPACE_ERROR
    BALANCE_EXHAUSTED = common_pb2.FAILURE_REASON_BALANCE_EXHAUSTED
    INTERNAL = common_pb2.FAILURE_REASON_INTERNAL
    PIDS_LIMIT = common_pb2.FAILURE_REASON_PIDS_LIMIT
    DISK_LIMIT = common_pb2.FAILURE_REASON_DISK_LIMIT


ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SCHEDULING, State.FAILED, State.CANCELED, State.TIMED_OUT}),
    State.SCHEDULING: frozenset(
        {State.RUNNING, State.PENDING, State.FAILED, State.CANCELED, State.TIMED_OUT}
    ),
    State.RUNNING: frozenset({State.COMPLETED, State.FAILED, State.CANCELED, State.TIMED_OUT}),
    State.COMPLETED: frozenset({State.SYNCED}),
    State.SYNCED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELED: frozenset(),
    State.TIMED_OUT: frozenset(),
}

# The script is over: an event stream ends, the agent's slot is free again.
FINISHED = frozenset({State.COMPLETED, State.SYNCED, State.FAILED, State.CANCELED, State.TIMED_OUT})
# Placed on an agent and not finished.
ON_AGENT = frozenset({State.SCHEDULING, State.RUNNING})


def check_transition(job_id: str, current: State, target: State) -> None:
    if target not in ALLOWED[current]:
        raise FailedPrecondition(f"job {job_id} is {current.name}; it cannot become {target.name}")


_Enum = TypeVar("_Enum", State, Reason)


def parse_enum(kind: type[_Enum], value: int, field: str) -> _Enum:
    """A wire enum value as `kind`; a value this coordinator does not know is a bad request."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(m.name for m in kind)
        raise InvalidArgument(f"{field} {value} is not a known value ({known})") from None


def state_name(value: int) -> str:
    try:
        return State(value).name
    except ValueError:
        return f"unknown state {value}"
