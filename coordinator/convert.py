"""Domain objects -> protobuf messages (the servicers' only translation layer)."""

from __future__ import annotations

from c3.v1 import common_pb2, coordinator_pb2
from coordinator.events import timestamp
from coordinator.model import ApiKey, Job, Startup


def job_to_proto(job: Job) -> common_pb2.Job:
    msg = common_pb2.Job(
        id=job.id,
        org_id=job.org_id,
        state=common_pb2.JobState.ValueType(job.state),
        failure_reason=common_pb2.FailureReason.ValueType(job.failure_reason),
        exit_code=job.exit_code,
        message=job.message,
        agent_id=job.agent_id,
        gpu_profile=job.gpu_profile,
        provider=job.provider,
        region=job.region,
        artifacts_path=job.artifacts_path,
        artifacts_version=job.artifacts_version,
        runtime_seconds=job.runtime_seconds,
        pool=job.pool,
    )
    msg.spec.CopyFrom(job.spec)
    # Timestamps are filled in place: no temporary message and copy per field.
    msg.created_at.FromNanoseconds(int(job.created_at * 1e9))
    if job.started_at:
        msg.started_at.FromNanoseconds(int(job.started_at * 1e9))
    if job.finished_at:
        msg.finished_at.FromNanoseconds(int(job.finished_at * 1e9))
    for t in job.transitions:
        added = msg.transitions.add(state=common_pb2.JobState.ValueType(t.state), note=t.note)
        added.at.FromNanoseconds(int(t.at * 1e9))
    fill_startup(msg.startup, job.startup)
    return msg


def fill_startup(out: common_pb2.StartupBreakdown, s: Startup) -> None:
    out.allocation_ms = s.allocation_ms
    out.agent_pickup_ms = s.agent_pickup_ms
    out.workspace_fetch_ms = s.workspace_fetch_ms
    out.environment_ms = s.environment_ms
    out.script_start_ms = s.script_start_ms
    out.warm_pool_hit = s.warm_pool_hit


def key_to_proto(key: ApiKey) -> coordinator_pb2.ApiKeyInfo:
    msg = coordinator_pb2.ApiKeyInfo(id=key.id, name=key.name, revoked=key.revoked)
    msg.created_at.CopyFrom(timestamp(key.created_at))
    if key.last_used_at:
        msg.last_used_at.CopyFrom(timestamp(key.last_used_at))
    return msg
