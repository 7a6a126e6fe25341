"""Simulated agents by the thousand for the scheduling benchmark: each registers, holds
its stream (many share a channel) and answers every assignment at once with RUNNING and
COMPLETED, printing `A <job id> <ms from the job's creation>` per assignment on stdout.
Run as its own process (`python -m tests.harness.agents ADDRESS SECRET COUNT`): it prints
READY once every agent is connected, and ends on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from c3.grpcutil import bearer, channel
from c3.v1 import agent_pb2, agent_pb2_grpc, common_pb2

HEARTBEAT_MS = 10_000
AGENTS_PER_CHANNEL = 50


async def answer_assignments(
    stub: agent_pb2_grpc.AgentGatewayAsyncStub, secret: str, ready: asyncio.Queue[str]
) -> None:
    caps = agent_pb2.AgentCapabilities(
        profile="l40s-1x", gpu_class="l40", provider="local", capacity=1
    )
    reg = await stub.Register(agent_pb2.RegisterAgentRequest(secret=secret, capabilities=caps))
    call = stub.Connect(metadata=bearer(reg.credential))
    await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))
    await ready.put(reg.agent_id)

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_MS / 1000 / 2)
            await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))

    beater = asyncio.create_task(beat())
    try:
        async for message in call:
            if not message.HasField("assignment"):
                continue
            job = message.assignment.job
            latency_ms = (time.time() - job.created_at.ToNanoseconds() / 1e9) * 1000
            sys.stdout.write(f"A {job.id} {latency_ms:.3f}\n")
            # Started and finished at once: both reports travel together, as a real agent
            # sends whatever it has queued (agent/connection.py's Outbox).
            reports = agent_pb2.AgentReports(
                items=[
                    agent_pb2.AgentReport(
                        status=agent_pb2.JobStatusUpdate(job_id=job.id, state=state)
                    )
                    for state in (common_pb2.JOB_STATE_RUNNING, common_pb2.JOB_STATE_COMPLETED)
                ]
            )
            await call.write(agent_pb2.AgentMessage(reports=reports))
    finally:
        beater.cancel()


async def run_agents(address: str, secret: str, count: int) -> None:
    ready: asyncio.Queue[str] = asyncio.Queue()
    channels = [
        channel(address) for _ in range((count + AGENTS_PER_CHANNEL - 1) // AGENTS_PER_CHANNEL)
    ]
    tasks = [
        asyncio.create_task(
            answer_assignments(
                agent_pb2_grpc.AgentGatewayStub(channels[i // AGENTS_PER_CHANNEL]), secret, ready
            )
        )
        for i in range(count)
    ]
    for _ in range(count):
        await ready.get()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    flusher_stop = asyncio.Event()

    async def flusher() -> None:
        while not flusher_stop.is_set():
            sys.stdout.flush()
            await asyncio.sleep(0.005)

    flush_task = asyncio.create_task(flusher())
    everything = asyncio.gather(*tasks, return_exceptions=True)
    # End cleanly on SIGTERM so a profiler wrapping this process can write its file.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, everything.cancel)
    try:
        await everything
    except asyncio.CancelledError:
        pass
    flusher_stop.set()
    await flush_task


def main() -> None:
    address, secret, count = sys.argv[1:4]
    try:
        asyncio.run(run_agents(address, secret, int(count)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
