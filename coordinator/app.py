"""Wires the coordinator together and runs it: `Coordinator.start(config)`."""

from __future__ import annotations

import logging
import os

from c3.grpcutil import Server, create_server
from c3.tls import channel_credentials, server_credentials
from c3.tokens import TokenSigner
from c3.v1 import admin_pb2_grpc, agent_pb2, agent_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc
from coordinator.accounts import Accounts
from coordinator.admin import SERVICE_NAME as ADMIN_SERVICE
from coordinator.admin import AdminServicer
from coordinator.agents import AgentRegistry
from coordinator.billing import Billing
from coordinator.catalog import Catalog
from coordinator.config import CoordinatorConfig
from coordinator.db import Database
from coordinator.events import EventLog
from coordinator.gateway import AgentGatewayServicer
from coordinator.holds import JobHolds
from coordinator.jobs import JobService
from coordinator.pools import PoolManager
from coordinator.poolsetup import start_pools
from coordinator.repo import Repository
from coordinator.scheduler import Scheduler
from coordinator.servicer import CoordinatorServicer

log = logging.getLogger(__name__)


class Coordinator:
    """A running coordinator; `address` is "host:port" as bound."""

    def __init__(
        self, config: CoordinatorConfig, db: Database, server: Server, scheduler: Scheduler,
        accounts: Accounts, jobs: JobService,
    ) -> None:  # fmt: skip
        self.config = config
        self.db = db
        self.server = server
        self.scheduler = scheduler
        self.accounts = accounts
        self.jobs = jobs
        host = config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{server.port}"

    @classmethod
    async def start(cls, config: CoordinatorConfig) -> Coordinator:
        catalog = Catalog.load()
        signer = TokenSigner.load_or_create(config.signing_key)
        db = await Database.open(config.database)
        repo = Repository(db)
        accounts = Accounts(repo, config.starting_credit_minor, config.plans)
        await accounts.load()
        if config.bootstrap_file is not None:
            await accounts.bootstrap(config.bootstrap_file, config.bootstrap_plan)
        agents = AgentRegistry(repo, accounts)
        await agents.load()
        events = EventLog(repo)
        jobs = JobService(repo, events, config.log_cap_bytes, config.keep_finished_s)
        def limit_of(org_id: str) -> tuple[int, str]:
            plan = accounts.org(org_id).plan
            return config.concurrency_limit(plan), plan

        scheduler = Scheduler(
            jobs, agents, catalog.classes, signer, config.storage_address, config.loss_after_s,
            limit_of=limit_of, time_limit_grace_s=config.time_limit_grace_s,
            supersede_hold_s=config.supersede_hold_s,
        )  # fmt: skip
        jobs.scheduler = scheduler
        scheduler.restore(await jobs.load())
        storage_creds = channel_credentials(config.storage_tls_ca) if config.storage_tls_ca else None
        billing = Billing(
            accounts, jobs, db, catalog, signer, config.storage_address, storage_creds
        )
        await billing.load()
        holds = JobHolds(jobs, repo, signer, config.storage_address, storage_creds)
        await holds.load()
        await db.barrier()
        coordinator = CoordinatorServicer(
            accounts, jobs, scheduler, catalog, signer, config.storage_address,
            config.client_token_ttl_s,
        )  # fmt: skip
        coordinator.billing = billing
        admin = AdminServicer(
            accounts, billing, config.bootstrap_plan, catalog.currency, agents, scheduler
        )
        gateway = AgentGatewayServicer(agents, jobs, scheduler, config.heartbeat_ms)
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
        )
        app = cls(config, db, server, scheduler, accounts, jobs)
        app.holds = holds
        app.pools = await start_pools(config, accounts, scheduler, catalog, app.address)
        if config.ready_file is not None:
            tmp = config.ready_file.with_name(config.ready_file.name + ".tmp")
            tmp.write_text(app.address)
            os.replace(tmp, config.ready_file)
        log.info("coordinator serving on %s", app.address)
        return app

    pools: PoolManager | None = None
    holds: JobHolds | None = None

    async def stop(self) -> None:
        if self.pools is not None:
            await self.pools.close()  # agents this coordinator started go with it
        self.scheduler.stop()
        self.jobs.close()
        await self.server.stop(grace=1.0)
        if self.holds is not None:
            self.holds.stop()  # after the server: no submit is still pinning
        await self.db.close()
