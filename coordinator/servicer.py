"""Coordinator gRPC service for clients: authenticate, convert, call the domain."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from grpc import aio

from c3.errors import InvalidArgument
from c3.grpcutil import bearer_secret
from c3.limits import MAX_JOBS_PER_SUBMIT
from c3.tokens import ALL_OPERATIONS, TokenClaims, TokenSigner
from c3.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from coordinator.accounts import Accounts, Caller
from coordinator.billing import Billing
from coordinator.catalog import Catalog
from coordinator.convert import job_to_proto, key_to_proto
from coordinator.events import timestamp
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
        catalog: Catalog,
        signer: TokenSigner,
        storage_address: str,
        client_token_ttl_s: float,
    ) -> None:
        self._accounts = accounts
        self._jobs = jobs
        self._scheduler = scheduler
        self._catalog = catalog
        self._signer = signer
        self._storage_address = storage_address
        self._token_ttl = client_token_ttl_s
        self._catalog_gpu_names = set(catalog.classes) | {p.code for p in catalog.profiles}
        self._catalog_providers = set(catalog.providers)
        self.billing: Billing | None = None  # wired by the app

    def _caller(self, context: aio.ServicerContext) -> Caller:
        return self._accounts.authenticate(bearer_secret(context))

    def _gpu_names(self) -> set[str]:
        return self._catalog_gpu_names | self._scheduler.agent_gpu_names()

    def _providers(self) -> set[str]:
        return self._catalog_providers | self._scheduler.agent_providers()

    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: aio.ServicerContext
    ) -> pb.SubmitJobResponse:
        caller = self._caller(context)
        self._accounts.require_credit(caller.org.id)
        validate_spec(request.spec, self._gpu_names(), self._providers())
        job = await self._jobs.submit(
            caller.org.id, request.spec, request.prefer_agent_id, request.supersedes_job_id
        )
        return pb.SubmitJobResponse(job=job_to_proto(job))

    async def SubmitJobs(
        self, request: pb.SubmitJobsRequest, context: aio.ServicerContext
    ) -> pb.SubmitJobsResponse:
        caller = self._caller(context)
        if not request.jobs:
            raise InvalidArgument("jobs is empty: send at least one job")
        if len(request.jobs) > MAX_JOBS_PER_SUBMIT:
            raise InvalidArgument(
                f"jobs has {len(request.jobs)} entries; send at most {MAX_JOBS_PER_SUBMIT} "
                "per request"
            )
        self._accounts.require_credit(caller.org.id)
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
            caller.org.id, [(entry.spec, entry.prefer_agent_id) for entry in request.jobs]
        )
        return pb.SubmitJobsResponse(jobs=[job_to_proto(job) for job in jobs])

    async def GetJob(
        self, request: pb.GetJobRequest, context: aio.ServicerContext
    ) -> pb.GetJobResponse:
        caller = self._caller(context)
        job = await self._jobs.find(caller.org.id, request.job_id)
        return pb.GetJobResponse(job=job_to_proto(job))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: aio.ServicerContext
    ) -> pb.ListJobsResponse:
        caller = self._caller(context)
        jobs = await self._jobs.list_jobs(
            caller.org.id, request.states, request.project, request.limit
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: aio.ServicerContext
    ) -> pb.CancelJobResponse:
        caller = self._caller(context)
        if not request.job_ids:
            raise InvalidArgument("job_ids is empty: name at least one job to cancel")
        jobs = await self._jobs.cancel(caller.org.id, list(request.job_ids))
        return pb.CancelJobResponse(jobs=[job_to_proto(j) for j in jobs])

    async def MarkSynced(
        self, request: pb.MarkSyncedRequest, context: aio.ServicerContext
    ) -> pb.MarkSyncedResponse:
        caller = self._caller(context)
        job = await self._jobs.mark_synced(caller.org.id, request.job_id)
        return pb.MarkSyncedResponse(job=job_to_proto(job))

    async def StreamJobEvents(
        self, request: pb.StreamJobEventsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[common_pb2.JobEvent]:
        caller = self._caller(context)
        job = await self._jobs.find(caller.org.id, request.job_id)
        async for event in self._jobs.events.subscribe(
            job.id, request.after_seq, lambda: self._jobs.is_finished(job), follow=request.follow
        ):
            yield event

    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Job]:
        caller = self._caller(context)
        queue = self._jobs.watch(caller.org.id)
        try:
            if request.job_id:
                current = [await self._jobs.find(caller.org.id, request.job_id)]
            else:
                current = await self._jobs.list_jobs(
                    caller.org.id, request.states, request.project, request.limit
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
            self._jobs.unwatch(caller.org.id, queue)

    async def ListHardware(
        self, request: pb.ListHardwareRequest, context: aio.ServicerContext
    ) -> pb.ListHardwareResponse:
        self._caller(context)
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
        self, request: pb.GetBalanceRequest, context: aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        caller = self._caller(context)
        org = self._accounts.org(caller.org.id)
        reply = pb.GetBalanceResponse(
            balance_minor=org.balance_minor, currency=self._catalog.currency, plan=org.plan
        )
        if self.billing is not None:
            reply.month_spend_minor = self.billing.month_spend(org.id)
            reply.storage_bytes = await self.billing.storage_bytes(org.id)
            if request.history:
                reply.charges.extend(
                    pb.Charge(job_id=c.job_id, amount_minor=c.amount_minor,
                              seconds=c.millis / 1000, gpu_profile=c.gpu_profile,
                              at=timestamp(c.at))
                    for c in self.billing.charges(org.id)
                )  # fmt: skip
        return reply

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        caller = self._caller(context)
        key, secret = await self._accounts.create_key(caller.org.id, request.name)
        return pb.CreateApiKeyResponse(key=key_to_proto(key), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        caller = self._caller(context)
        keys = self._accounts.list_keys(caller.org.id)
        return pb.ListApiKeysResponse(keys=[key_to_proto(k) for k in keys])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        caller = self._caller(context)
        key = await self._accounts.revoke_key(caller.org.id, request.key_id)
        return pb.RevokeApiKeyResponse(key=key_to_proto(key))

    async def WhoAmI(
        self, request: pb.WhoAmIRequest, context: aio.ServicerContext
    ) -> pb.WhoAmIResponse:
        caller = self._caller(context)
        return pb.WhoAmIResponse(
            key_id=caller.key.id, key_name=caller.key.name, org_id=caller.org.id,
            org_name=caller.org.name, plan=caller.org.plan, admin=caller.key.admin,
        )  # fmt: skip

    async def IssueStorageToken(
        self, request: pb.IssueStorageTokenRequest, context: aio.ServicerContext
    ) -> pb.IssueStorageTokenResponse:
        caller = self._caller(context)
        ops = tuple(request.operations) or ALL_OPERATIONS
        unknown = set(ops) - set(ALL_OPERATIONS)
        if unknown:
            raise InvalidArgument(
                f"unknown storage operations {sorted(unknown)}; allowed: {', '.join(ALL_OPERATIONS)}"
            )
        expires = time.time() + self._token_ttl
        token = self._signer.sign(
            TokenClaims(
                org_id=caller.org.id, operations=ops, read_prefixes=("/",),
                write_prefixes=("/",), expires_at=expires, subject=f"key:{caller.key.id}",
            )
        )  # fmt: skip
        return pb.IssueStorageTokenResponse(
            token=token, expires_at=timestamp(expires), storage_address=self._storage_address
        )
