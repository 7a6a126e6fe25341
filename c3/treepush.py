"""Pushing a tree to storaged: only the blobs the server lacks, then its manifest.

One implementation for every client that uploads a tree (c3d's deploy and local datasets,
`c3ctl data cp`, the push benchmark). Digests known to be on a server are remembered per
server identity (in memory, in front of the hash index's table) so an unchanged tree costs
no find-missing call at all; when the server says otherwise (it collected them), they are
forgotten and sent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from c3 import manifest as mf
from c3.errors import FailedPrecondition
from c3.hashindex import HashIndex, HashStats
from c3.storage_client import LocalBlob, StorageClient
from c3.v1 import common_pb2
from c3.workspace import WorkspaceFile

# path -> (digest, size, executable, stat fingerprint)
FileInfo = tuple[str, int, bool, int]
Progress = Callable[[int, int], None]


def server_identity(storage_address: str, api_key: str) -> str:
    """Key of the known-present cache: one store as seen by one credential (orgs differ)."""
    return f"{storage_address}|{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


@dataclass
class TreePush:
    """What a push did: the manifest's digest and what travelled."""

    digest: str
    blobs_new: int = 0
    bytes_sent: int = 0
    bytes_total: int = 0
    # False when the server confirmed it already had the manifest (nothing was uploaded).
    manifest_sent: bool = False


class TreePusher:
    def __init__(self, hashes: HashIndex) -> None:
        self.hashes = hashes
        self._present: dict[str, set[str]] = {}

    async def push_files(
        self,
        root: Path,
        files: Sequence[WorkspaceFile] | Sequence[tuple[str, object]],
        storage: StorageClient,
        server_key: str,
        progress: Progress | None = None,
    ) -> tuple[TreePush, HashStats]:
        """Hash `files` (through the index: unchanged ones are not read), then push."""
        pairs = [(f.path, f.stat) if isinstance(f, WorkspaceFile) else f for f in files]
        entries, hash_stats = await self.hashes.digests(root, pairs)  # type: ignore[arg-type]
        tree = await asyncio.to_thread(mf.build, entries)
        by_path = {e.path: (e.digest, e.size, e.executable, 0) for e in entries}
        return await self.push_tree(root, tree, by_path, storage, server_key, progress), hash_stats

    async def push_tree(
        self,
        root: Path,
        tree: common_pb2.Manifest,
        files: Mapping[str, FileInfo],
        storage: StorageClient,
        server_key: str,
        progress: Progress | None = None,
    ) -> TreePush:
        """Push the blobs of `tree` (whose entries `files` describes) the server lacks, then
        its manifest. A manifest known present is only confirmed (a find-missing of one
        digest), so an unchanged tree moves no bytes; anything the server no longer has is
        forgotten here and sent again."""
        result = TreePush(digest="", bytes_total=sum(i[1] for i in files.values()))
        await self._send(root, files, storage, server_key, progress, result)
        present = self._present[server_key]
        digest = await asyncio.to_thread(mf.digest_of, tree)
        if digest in present and not await storage.find_missing([digest]):
            result.digest = digest
            return result
        result.digest, missing = await storage.store_manifest(tree)
        result.manifest_sent = True
        if missing:
            lost = set(missing)
            present.difference_update(lost)
            await self.hashes.forget_present(server_key, lost)
            again = {p: i for p, i in files.items() if i[0] in lost}
            await self._send(root, again, storage, server_key, None, result)
            _, missing = await storage.store_manifest(tree)
            if missing:
                raise FailedPrecondition(
                    f"storage still lacks {len(missing)} blobs of {root} after re-uploading them"
                )
        present.add(result.digest)
        await self.hashes.mark_present(server_key, [result.digest])
        return result

    async def _send(
        self,
        root: Path,
        files: Mapping[str, FileInfo],
        storage: StorageClient,
        server_key: str,
        progress: Progress | None,
        result: TreePush,
    ) -> None:
        present = self._present.setdefault(server_key, set())
        unknown = {info[0] for info in files.values()} - present
        if unknown:
            present |= await self.hashes.known_present(server_key, unknown)
        candidates: dict[str, LocalBlob] = {}
        for path, (digest, size, _, _) in files.items():
            if digest not in present and digest not in candidates:
                candidates[digest] = LocalBlob(root / path, digest, size)
        pushed = await storage.push_files(list(candidates.values()), progress=progress)
        result.blobs_new += pushed.blobs_new
        result.bytes_sent += pushed.bytes_sent
        if candidates:
            await self.hashes.mark_present(server_key, candidates)
            present.update(candidates)
