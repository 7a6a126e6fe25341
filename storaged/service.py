"""The Storage gRPC servicer: converts messages and delegates. The caller's token and what
it allows were checked before a handler runs (storaged/auth.py); handlers check only what
needs the store: which blobs and manifests a job's token may read."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from c3.errors import PermissionDenied
from c3.storage import wire
from c3.tokens import READ, TokenClaims
from c3.v1 import storage_pb2, storage_pb2_grpc
from storaged.auth import grant
from storaged.catalog import Catalog
from storaged.scope import BlobScope
from storaged.store import BlobStore

SERVICE_NAME = wire.SERVICE_NAME


class StorageService(storage_pb2_grpc.StorageServicer):
    def __init__(self, store: BlobStore, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog
        self.scope = BlobScope(store)

    async def _readable_blobs(self, digests: list[str]) -> TokenClaims:
        """Claims of a token that may read these blobs: its org references them (the
        store checks) and, for a job token, they are within its inputs and outputs."""
        caller = grant()
        await self.scope.require(caller.token, caller.claims, digests)
        return caller.claims

    async def FindMissing(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        missing = await self.store.find_missing(claims.org_id, list(request.digests))
        return storage_pb2.FindMissingResponse(missing=missing)

    async def PutBlobs(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        stored, received = await self.store.put_blobs(claims.org_id, list(request.blobs))
        return storage_pb2.PutBlobsResponse(stored=stored, bytes_received=received)

    async def GetBlobs(self, request, context) -> AsyncIterator[storage_pb2.BlobData]:  # type: ignore[no-untyped-def]
        claims = await self._readable_blobs(list(request.digests))
        async for blob in self.store.get_blobs(
            claims.org_id, list(request.digests), request.accept_zstd
        ):
            yield blob

    async def PutBlobStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        # Raw messages (storaged.handlers): each chunk's data stays a view of what arrived.
        chunks = (wire.parse_chunk(message) async for message in request_iterator)
        digest, received = await self.store.put_stream(claims.org_id, chunks)
        return storage_pb2.PutBlobStreamResponse(digest=digest, bytes_received=received)

    async def GetBlobStream(self, request, context) -> AsyncIterator[storage_pb2.BlobChunk]:  # type: ignore[no-untyped-def]
        claims = await self._readable_blobs([request.digest])
        async for chunk in self.store.get_stream(
            claims.org_id, request.digest, request.accept_zstd, request.offset
        ):
            yield chunk

    async def UploadOffset(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        offset = await self.store.upload_offset(claims.org_id, request.digest, request.compression)
        return storage_pb2.UploadOffsetResponse(offset=offset)

    async def PutManifest(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        digest, missing = await self.store.put_manifest(claims.org_id, request.manifest)
        return storage_pb2.PutManifestResponse(digest=digest, missing=missing)

    async def GetManifest(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        if not claims.allows(READ, "/") and request.digest not in claims.read_manifests:
            # A scoped token (a job's) reads only its named manifests or committed versions
            # under its read prefixes.
            paths = await self.store.meta.paths_with_manifest(claims.org_id, request.digest)
            if not any(claims.allows(READ, p) for p in paths):
                raise PermissionDenied(
                    f"token does not allow reading manifest {request.digest[:12]}"
                )
        compression, size, data = await self.store.get_manifest_data(claims.org_id, request.digest)
        return storage_pb2.GetManifestResponse(
            data=data, compression=compression, size=size  # type: ignore[arg-type]
        )

    async def Commit(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        version = await self.catalog.commit(
            claims.org_id, request.path, request.manifest_digest, request.message, request.project
        )
        return storage_pb2.CommitResponse(version=version)

    async def Resolve(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        return storage_pb2.ResolveResponse(
            version=await self.catalog.resolve(claims.org_id, request.ref)
        )

    async def List(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        return await self.catalog.list(claims.org_id, request.path)

    async def Log(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        return storage_pb2.LogResponse(versions=await self.catalog.log(claims.org_id, request.path))

    async def Remove(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        removed = await self.catalog.remove(claims.org_id, request.path, request.recursive)
        return storage_pb2.RemoveResponse(removed_versions=removed)

    async def DiskUsage(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        return await self.catalog.disk_usage(claims.org_id, request.path)

    async def Hold(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        expires_at = await self.catalog.hold(
            claims.org_id, request.path, request.version, request.holder, request.ttl_seconds
        )
        stamp = Timestamp()
        stamp.FromNanoseconds(int(expires_at * 1e9))
        return storage_pb2.HoldResponse(expires_at=stamp)

    async def Release(self, request, context):  # type: ignore[no-untyped-def]
        claims = grant().claims
        released = await self.catalog.release(claims.org_id, request.holder)
        return storage_pb2.ReleaseResponse(released=released)
