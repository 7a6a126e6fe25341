"""Storage: storaged's client and what it shares with storaged.

Shared by both ends (and all storaged imports from here): `wire` (how blobs travel and
the hand-built upload messages), `codec` (compression and verification) and `batching`.
The client side: `client` (StorageClient) over `upload` and `download`, with `blobcache`
(an agent's verified local blobs), `hashindex` (the stat cache) and `treepush` (pushing a
tree). Imports point one way, down that list; nothing here imports a server.
"""
