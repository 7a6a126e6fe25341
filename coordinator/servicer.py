"""Coordinator gRPC service for clients: convert, call the domain. Who is calling was
settled before a handler runs (coordinator/auth.py): `caller()` is their key and org."""

from __future__ import annotations

from collections.abc import AsyncIterator

from c3.errors import InvalidArgument
from c3.grpctypes import Context
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.tokens import ALL_OPERATIONS
from c3.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from coordinator.accounts import Accounts
from coordinator.agents import AgentRegistry
from coordinator.auth import caller
from coordinator.billing import Billing
from coordinator.catalog import Catalog
from coordinator.convert import job_to_proto, key_to_proto
from coordinator.events import timestamp
from coordinator.grants import StorageGrants
from coordinator.jobs import JobService
from coordinator.scheduler import Scheduler
from coordinator.validation import validate_spec

pb = coordinator_pb2


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(
        self,
        accounts: Accounts,
        jobs: JobService,
        scheduler: Scheduler,
        agents: AgentRegistry,
        catalog: Catalog,
        grants: StorageGrants,
        billing: Billing,
    ) -> None:
        self._accounts = accounts
        self._jobs = jobs
        self._scheduler = scheduler
        self._agents = agents
        self._catalog = catalog
        self._grants = grants
        self._billing = billing
        self._catalog_gpu_names = set(catalog.classes) | {p.code for p in catalog.profiles}
        self._catalog_providers = set(catalog.providers)

    def _gpu_names(self) -> set[str]:
        return self._catalog_gpu_names | self._agents.gpu_names

    def _providers(self) -> set[str]:
        return self._catalog_providers | self._agents.providers

    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: Context
    ) -> pb.SubmitJobResponse:
        who = caller()
        self._accounts.require_credit(who.org.id)
        validate_spec(request.spec, self._gpu_names(), self._providers())
        job = await self._jobs.submit(
            who.org.id,
            request.spec,
            request.prefer_agent_id,
            request.supersedes_job_id,
            created=self._scheduler.settle,  # placed now, not a loop turn later
        )
        return pb.SubmitJobResponse(job=job_to_proto(job))

    async def SubmitJobs(
        self, request: pb.SubmitJobsRequest, context: Context
    ) -> pb.SubmitJobsResponse:
        who = caller()
        if not request.jobs:
            raise InvalidArgument("jobs is empty: send at least one job")
        if len(request.jobs) > MAX_JOBS_PER_SUBMIT:
            raise InvalidArgument(
                f"jobs has {len(request.jobs)} entries; send at most {MAX_JOBS_PER_SUBMIT} "
                "per request"
            )
        self._accounts.require_credit(who.org.id)
        gpu_names, providers = self._gpu_names(), self._providers()
        for index, entry in enumerate(request.jobs):
            if entry.supersedes_job_id:
                raise InvalidArgument(
                    f"jobs[{index}].supersedes_job_id is set: supersede one job at a time "
                    "with SubmitJob"
                )
            try:
                validate_spec(entry.spec, gpu_names, providers)
            except InvalidArgument as exc:
                raise InvalidArgument(f"jobs[{index}]: {exc.message}") from None
        jobs = await self._jobs.submit_many(
            who.org.id,
            [(entry.spec, entry.prefer_agent_id) for entry in request.jobs],
            created=self._scheduler.settle,
        )
        return pb.SubmitJobsResponse(jobs=[job_to_proto(job) for job in jobs])

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        who = caller()
        job = await self._jobs.find(who.org.id, request.job_id)
        return pb.GetJobResponse(job=job_to_proto(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        who = caller()
        jobs = await self._jobs.list_jobs(
            who.org.id, request.states, request.project, request.limit
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        who = caller()
        if not request.job_ids:
            raise InvalidArgument("job_ids is empty: name at least one job to cancel")
        jobs = await self._jobs.cancel(who.org.id, list(request.job_ids))
        return pb.CancelJobResponse(jobs=[job_to_proto(j) for j in jobs])

    async def MarkSynced(
        self, request: pb.MarkSyncedRequest, context: Context
    ) -> pb.MarkSyncedResponse:
        who = caller()
        job = await self._jobs.mark_synced(who.org.id, request.job_id)
        return pb.MarkSyncedResponse(job=job_to_proto(job))

    async def StreamJobEvents(
        self, request: pb.StreamJobEventsRequest, context: Context
    ) -> AsyncIterator[common_pb2.JobEvent]:
        who = caller()
        job = await self._jobs.find(who.org.id, request.job_id)
        async for event in self._jobs.events.subscribe(
            job.id, request.after_seq, lambda: self._jobs.is_finished(job), follow=request.follow
        ):
            yield event

    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: Context
    ) -> AsyncIterator[common_pb2.Job]:
        who = caller()
        queue = self._jobs.watch(who.org.id)
        try:
            if request.job_id:
                current = [await self._jobs.find(who.org.id, request.job_id)]
            else:
                current = await self._jobs.list_jobs(
                    who.org.id, request.states, request.project, request.limit
                )
            for job in current:
                yield job_to_proto(job)
            while True:
                job = await queue.get()
                if request.job_id:
                    if job.id == request.job_id:
                        yield job_to_proto(job)
                elif not request.project or job.spec.project == request.project:
                    yield job_to_proto(job)
        finally:
            self._jobs.unwatch(who.org.id, queue)

    async def ListHardware(
        self, request: pb.ListHardwareRequest, context: Context
    ) -> pb.ListHardwareResponse:
        idle: dict[str, int] = {}
        extra: dict[str, pb.HardwareProfile] = {}
        for agent in self._scheduler.idle_agents():
            idle[agent.caps.profile] = idle.get(agent.caps.profile, 0) + 1
        profiles = []
        for p in self._catalog.profiles:
            profiles.append(
                pb.HardwareProfile(
                    code=p.code, gpu_class=p.gpu_class, gpu_name=p.gpu_name,
                    gpu_count=p.gpu_count, vram_gb=p.vram_gb,
                    price_per_hour_minor=p.price_per_hour_minor, currency=self._catalog.currency,
                    cpu_per_gpu=p.cpu_per_gpu, ram_gb_per_gpu=p.ram_gb_per_gpu,
                    disk_gb_per_gpu=p.disk_gb_per_gpu, providers=list(p.providers),
                    available=idle.get(p.code, 0),
                )
            )  # fmt: skip
        # Agents whose profile the catalog does not list still show up, unpriced.
        for agent in self._scheduler.known_agents():
            code = agent.caps.profile
            if self._catalog.profile(code) is None and code not in extra:
                extra[code] = pb.HardwareProfile(
                    code=code, gpu_class=agent.caps.gpu_class, gpu_count=agent.caps.gpu_count,
                    currency=self._catalog.currency, providers=[agent.caps.provider],
                    available=idle.get(code, 0),
                )  # fmt: skip
        return pb.ListHardwareResponse(profiles=profiles + list(extra.values()))

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: Context
    ) -> pb.GetBalanceResponse:
        who = caller()
        org = self._accounts.org(who.org.id)
        reply = pb.GetBalanceResponse(
            balance_minor=org.balance_minor, currency=self._catalog.currency, plan=org.plan
        )
        reply.month_spend_minor = self._billing.month_spend(org.id)
        reply.storage_bytes = await self._billing.storage_bytes(org.id)
        if request.history:
            reply.charges.extend(
                pb.Charge(job_id=c.job_id, amount_minor=c.amount_minor,
                          seconds=c.millis / 1000, gpu_profile=c.gpu_profile,
                          at=timestamp(c.at))
                for c in self._billing.charges(org.id)
            )  # fmt: skip
        return reply

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        who = caller()
        key, secret = await self._accounts.create_key(who.org.id, request.name)
        return pb.CreateApiKeyResponse(key=key_to_proto(key), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        who = caller()
        keys = self._accounts.list_keys(who.org.id)
        return pb.ListApiKeysResponse(keys=[key_to_proto(k) for k in keys])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        who = caller()
        key = await self._accounts.revoke_key(who.org.id, request.key_id)
        return pb.RevokeApiKeyResponse(key=key_to_proto(key))

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Context) -> pb.WhoAmIResponse:
        who = caller()
        return pb.WhoAmIResponse(
            key_id=who.key.id, key_name=who.key.name, org_id=who.org.id,
            org_name=who.org.name, plan=who.org.plan, admin=who.key.admin,
        )  # fmt: skip

    async def IssueStorageToken(
        self, request: pb.IssueStorageTokenRequest, context: Context
    ) -> pb.IssueStorageTokenResponse:
        who = caller()
        ops = tuple(request.operations) or ALL_OPERATIONS
        unknown = set(ops) - set(ALL_OPERATIONS)
        if unknown:
            raise InvalidArgument(
                f"unknown storage operations {sorted(unknown)}; allowed: {', '.join(ALL_OPERATIONS)}"
            )
        token, expires = self._grants.for_client(who.org.id, who.key.id, ops)
        return pb.IssueStorageTokenResponse(
            token=token, expires_at=timestamp(expires), storage_address=self._grants.storage_address
        )
