"""Domain objects -> protobuf messages (the servicers' only translation layer)."""

from __future__ import annotations

from c3.v1 import common_pb2, coordinator_pb2
from coordinator.events import timestamp
from coordinator.model import ApiKey, Job


def job_to_proto(job: Job) -> common_pb2.Job:
    msg = common_pb2.Job(
        id=job.id,
        org_id=job.org_id,
        state=int(job.state),  # type: ignore[arg-type]
        failure_reason=int(job.failure_reason),  # type: ignore[arg-type]
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
    msg.created_at.CopyFrom(timestamp(job.created_at))
    if job.started_at:
        msg.started_at.CopyFrom(timestamp(job.started_at))
    if job.finished_at:
        msg.finished_at.CopyFrom(timestamp(job.finished_at))
    for t in job.transitions:
        msg.transitions.add(state=int(t.state), at=timestamp(t.at), note=t.note)  # type: ignore[arg-type]
    s = job.startup
    msg.startup.CopyFrom(
        common_pb2.StartupBreakdown(
            allocation_ms=s.allocation_ms,
            agent_pickup_ms=s.agent_pickup_ms,
            workspace_fetch_ms=s.workspace_fetch_ms,
            environment_ms=s.environment_ms,
            script_start_ms=s.script_start_ms,
            warm_pool_hit=s.warm_pool_hit,
        )
    )
    return msg


def key_to_proto(key: ApiKey) -> coordinator_pb2.ApiKeyInfo:
    msg = coordinator_pb2.ApiKeyInfo(id=key.id, name=key.name, revoked=key.revoked)
    msg.created_at.CopyFrom(timestamp(key.created_at))
    if key.last_used_at:
        msg.last_used_at.CopyFrom(timestamp(key.last_used_at))
    return msg
