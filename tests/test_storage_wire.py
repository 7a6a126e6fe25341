"""The hand-built upload messages: the client's encoders write exactly what protobuf writes,
storaged's chunk parser reads any valid encoding as protobuf does and refuses the rest;
and a cached storage token still expires."""

from __future__ import annotations

import os
import random
import time

import pytest

from c3.errors import InvalidArgument, Unauthenticated
from c3.storage.wire import encode_chunk, encode_put_blobs, parse_chunk
from c3.tokens import ALL_OPERATIONS, TokenClaims, TokenSigner, TokenVerifier
from c3.v1 import storage_pb2

pytestmark = pytest.mark.unit


SIZES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 1 << 40]


def test_put_blobs_encoding_is_protobufs() -> None:
    rng = random.Random(7)
    for size in SIZES:
        blobs = [
            (os.urandom(32).hex(), size, rng.choice([0, 1, 2]), os.urandom(min(size, 300)))
            for _ in range(rng.randint(0, 4))
        ]
        expected = storage_pb2.PutBlobsRequest(
            blobs=[
                storage_pb2.BlobData(digest=d, size=s, compression=c, data=p)  # type: ignore[arg-type]
                for d, s, c, p in blobs
            ]
        ).SerializeToString()
        assert encode_put_blobs(blobs) == expected


def test_chunk_encoding_is_protobufs_and_parses_back() -> None:
    for size in SIZES:
        for header in (None, (os.urandom(32).hex(), size, 2, size + 3)):
            for last in (False, True):
                data = os.urandom(min(size, 500))
                message = storage_pb2.BlobChunk(offset=size, data=data, last=last)
                if header is not None:
                    message.digest, message.size = header[0], header[1]
                    message.compression, message.total = header[2], header[3]  # type: ignore[assignment]
                encoded = encode_chunk(size, data, last=last, header=header)
                assert encoded == message.SerializeToString()
                chunk = parse_chunk(encoded)
                assert (chunk.digest, chunk.size, chunk.compression, chunk.offset) == (
                    message.digest,
                    message.size,
                    message.compression,
                    message.offset,
                )
                assert (bytes(chunk.data), chunk.total, chunk.last) == (
                    message.data,
                    message.total,
                    message.last,
                )


def test_chunk_parser_reads_any_field_order_and_skips_unknown_fields() -> None:
    data = b"payload"
    unknown = b"\x48\x05" + b"\x52\x03abc" + b"\x5d\x01\x02\x03\x04" + b"\x61" + b"\x00" * 8
    reordered = (
        b"\x38\x01"  # last
        + b"\x2a\x07" + data  # data
        + unknown
        + b"\x20\x05"  # offset 5
        + b"\x20\x09"  # offset again: the last value wins
    )
    chunk = parse_chunk(reordered)
    assert (bytes(chunk.data), chunk.offset, chunk.last) == (data, 9, True)
    assert storage_pb2.BlobChunk.FromString(reordered).offset == 9


@pytest.mark.parametrize(
    "message",
    [
        b"\x2a\x10short",  # data longer than the message
        b"\x20",  # varint cut off
        b"\x20" + b"\xff" * 11,  # varint longer than 64 bits
        b"\x23\x00",  # a group
        b"\x0a\x02\xff\xfe",  # digest that is not UTF-8
        b"\x20\x05\x2a",  # data field without its length
        b"\x28\x05",  # data as a varint
        b"\x00\x01",  # field number 0
    ],
)
def test_malformed_chunks_are_refused(message: bytes) -> None:
    with pytest.raises(InvalidArgument, match="malformed BlobChunk"):
        parse_chunk(message)


def test_a_remembered_token_still_expires(tmp_path: os.PathLike[str]) -> None:
    signer = TokenSigner.load_or_create(tmp_path / "k.pem")  # type: ignore[operator]
    tokens = TokenVerifier.from_pem(signer.public_key_pem())
    token = signer.sign(
        TokenClaims(org_id="o", operations=ALL_OPERATIONS, expires_at=time.time() + 60)
    )
    assert tokens.verify(token).org_id == "o"
    assert tokens.verify(token).org_id == "o"  # remembered: no second signature check
    later = time.time() + 120
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token, now=later)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token, now=later)  # and every time after
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="invalid"):
        tokens.verify(forged)  # a different string is checked in full
