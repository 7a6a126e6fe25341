"""Builds the coordinator from its parts and runs it: `await Coordinator.start(config)`.

Every part gets what it needs through its constructor, in dependency order; parts that
react to job or agent changes subscribe to the topics (coordinator/changes.py) instead of
being called by the part that changes them. Each step that starts something registers how
it stops (c3/service.py), so a start that fails half-way leaves nothing running.
"""

from __future__ import annotations

import logging
import os

from c3.grpcutil import Server, create_server
from c3.service import Probe, Service, Steps, build
from c3.tls import channel_credentials, server_credentials
from c3.tokens import TokenSigner
from c3.v1 import admin_pb2_grpc, agent_pb2, agent_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc
from coordinator import auth
from coordinator.accounts import Accounts
from coordinator.admin import SERVICE_NAME as ADMIN_SERVICE
from coordinator.admin import AdminServicer
from coordinator.agents import AgentRegistry
from coordinator.billing import Billing
from coordinator.catalog import Catalog
from coordinator.changes import AgentChange, JobChange, Topic
from coordinator.config import CoordinatorConfig
from coordinator.events import EventLog
from coordinator.gateway import AgentGatewayServicer
from coordinator.grants import StorageGrants
from coordinator.holds import JobHolds
from coordinator.jobs import JobService
from coordinator.liveness import Liveness
from coordinator.pools import PoolManager
from coordinator.poolsetup import pool_board, start_pools
from coordinator.repo import SqliteRepository
from coordinator.scheduler import Scheduler
from coordinator.servicer import CoordinatorServicer
from coordinator.storage import StorageLink

log = logging.getLogger(__name__)


class Coordinator(Service):
    """A running coordinator; `address` is "host:port" as bound."""

    def __init__(
        self,
        steps: Steps,
        config: CoordinatorConfig,
        repo: SqliteRepository,
        server: Server,
        scheduler: Scheduler,
        accounts: Accounts,
        jobs: JobService,
        holds: JobHolds,
        pools: PoolManager | None,
    ) -> None:
        super().__init__(steps.hand_over())
        self.config = config
        self.repo = repo
        self.db = repo.db
        self.server = server
        self.scheduler = scheduler
        self.accounts = accounts
        self.jobs = jobs
        self.holds = holds
        self.pools = pools
        host = config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{server.port}"

    @classmethod
    async def start(cls, config: CoordinatorConfig, probe: Probe | None = None) -> Coordinator:
        return await build(lambda steps: cls._build(steps, config), probe)

    @classmethod
    async def _build(cls, steps: Steps, config: CoordinatorConfig) -> Coordinator:
        steps.step("catalog")
        catalog = Catalog.load()
        signer = TokenSigner.load_or_create(config.signing_key)
        grants = StorageGrants(signer, config.storage_address, config.client_token_ttl_s)

        steps.step("database")
        repo = await SqliteRepository.open(config.database)
        steps.on_stop(repo.close)

        steps.step("accounts")
        accounts = Accounts(repo, config.starting_credit_minor, config.plans)
        await accounts.load()
        if config.bootstrap_file is not None:
            await accounts.bootstrap(config.bootstrap_file, config.bootstrap_plan)
        agents = AgentRegistry(repo, accounts, catalog.classify)
        await agents.load()

        steps.step("storage")
        storage_creds = channel_credentials(config.storage_tls_ca) if config.storage_tls_ca else None
        storage = StorageLink(grants, storage_creds)
        steps.on_stop(storage.close)

        steps.step("jobs")
        job_changes: Topic[JobChange] = Topic("job changes")
        agent_changes: Topic[AgentChange] = Topic("agent changes")
        holds = JobHolds(storage, repo, job_changes)
        steps.on_stop_sync(holds.stop)  # after the server: no submit is still pinning
        jobs = JobService(
            repo, EventLog(repo), job_changes, config.log_cap_bytes, config.keep_finished_s,
            pins=holds,
        )  # fmt: skip
        steps.on_stop_sync(jobs.close)
        loaded = await jobs.load()

        steps.step("scheduler")

        def limit_of(org_id: str) -> tuple[int, str]:
            plan = accounts.org(org_id).plan
            return config.concurrency_limit(plan), plan

        board = pool_board(config, catalog, agents)
        scheduler = Scheduler(
            jobs, job_changes, agents, agent_changes, catalog.classes, grants,
            limit_of=limit_of, time_limit_grace_s=config.time_limit_grace_s,
            supersede_hold_s=config.supersede_hold_s, waits=board,
        )  # fmt: skip
        liveness = Liveness(config.loss_after_s, scheduler.lost)
        steps.on_stop_sync(scheduler.stop)
        steps.on_stop_sync(liveness.stop)
        liveness.watch(scheduler.restore(loaded))

        steps.step("billing")
        billing = Billing(accounts, jobs, job_changes, repo, catalog, storage)
        steps.on_stop_sync(billing.stop)
        await billing.load(jobs.jobs.values())
        await holds.load(jobs.jobs.values())
        await repo.barrier()

        steps.step("server")
        coordinator = CoordinatorServicer(accounts, jobs, scheduler, agents, catalog, grants, billing)
        admin = AdminServicer(
            accounts, billing, config.bootstrap_plan, catalog.currency, agents, liveness
        )
        gateway = AgentGatewayServicer(agents, jobs, scheduler, liveness, config.heartbeat_ms)
        server = await create_server(
            config.listen,
            [
                (
                    coordinator_pb2_grpc.add_CoordinatorServicer_to_server,
                    coordinator,
                    coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,
                ),
                (admin_pb2_grpc.add_AdminServicer_to_server, admin, ADMIN_SERVICE),
                (
                    agent_pb2_grpc.add_AgentGatewayServicer_to_server,
                    gateway,
                    agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,
                ),
            ],
            server_credentials=(
                server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
                if config.tls_cert and config.tls_key else None
            ),
            auth=auth.rules(accounts, agents),
        )  # fmt: skip
        steps.on_stop(lambda: server.stop(grace=1.0))
        steps.on_stop_sync(scheduler.close_streams)  # before the server waits on them
        host = config.listen.rsplit(":", 1)[0]
        address = f"{host}:{server.port}"

        pools = None
        if board is not None:
            steps.step("pools")
            pools = await start_pools(
                config, board, accounts, scheduler, agent_changes, catalog, address
            )
            steps.on_stop(pools.close)  # agents this coordinator started go with it

        if config.ready_file is not None:
            steps.step("ready file")
            tmp = config.ready_file.with_name(config.ready_file.name + ".tmp")
            tmp.write_text(address)
            os.replace(tmp, config.ready_file)
        log.info("coordinator serving on %s", address)
        return cls(steps, config, repo, server, scheduler, accounts, jobs, holds, pools)
