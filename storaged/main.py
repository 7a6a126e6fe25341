"""c3-storaged: the content-addressed store.

c3-storaged --listen 127.0.0.1:7431 --data-dir DIR --token-public-key PEM [--ready-file F]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from c3.errors import C3Error
from c3.tls import server_credentials, warn_if_plaintext_listen
from c3.tokens import TokenVerifier
from storaged.server import StoragedConfig, StoragedServer


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="c3-storaged", description="c3 content-addressed store")
    p.add_argument(
        "--listen",
        default=_env("C3_STORAGED_LISTEN", "127.0.0.1:7431"),
        help="host:port to serve on (port 0 picks a free one)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=_env("C3_STORAGED_DATA_DIR", ""),
        help="directory for blobs and metadata",
    )
    p.add_argument(
        "--token-public-key",
        type=Path,
        default=_env("C3_STORAGED_TOKEN_PUBLIC_KEY", ""),
        help="PEM public key of the coordinator that signs storage tokens",
    )
    p.add_argument(
        "--ready-file", type=Path, default=None, help="write the bound host:port here once serving"
    )
    p.add_argument(
        "--max-blob-bytes", type=int, default=int(_env("C3_STORAGED_MAX_BLOB_BYTES", str(64 << 30)))
    )
    p.add_argument(
        "--gc-interval",
        type=float,
        default=float(_env("C3_STORAGED_GC_INTERVAL", "3600")),
        help="seconds between garbage collections (0 disables)",
    )
    p.add_argument(
        "--gc-grace",
        type=float,
        default=float(_env("C3_STORAGED_GC_GRACE", "21600")),
        help="never collect blobs touched within this many seconds",
    )
    p.add_argument("--tls-cert", default=_env("C3_STORAGED_TLS_CERT", ""),
                   help="server certificate (PEM); with --tls-key serves TLS")
    p.add_argument("--tls-key", default=_env("C3_STORAGED_TLS_KEY", ""))
    p.add_argument("--tls-client-ca", default=_env("C3_STORAGED_TLS_CLIENT_CA", ""),
                   help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--log-level", default=_env("C3_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    if not str(args.data_dir) or str(args.data_dir) == ".":
        p.error("--data-dir is required (or set C3_STORAGED_DATA_DIR)")
    if not str(args.token_public_key) or str(args.token_public_key) == ".":
        p.error("--token-public-key is required (or set C3_STORAGED_TOKEN_PUBLIC_KEY)")
    return args


def _write_ready(path: Path, address: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address)
    os.replace(tmp, path)


async def serve(args: argparse.Namespace) -> None:
    try:
        pem = args.token_public_key.read_bytes()
    except OSError as exc:
        raise C3Error(
            f"cannot read --token-public-key {args.token_public_key}: {exc.strerror}"
        ) from exc
    try:
        verifier = TokenVerifier.from_pem(pem)
    except (ValueError, AssertionError) as exc:
        raise C3Error(f"{args.token_public_key} is not an Ed25519 public key in PEM form") from exc
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise C3Error("--tls-cert and --tls-key go together")
        credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca or None)
    else:
        warn_if_plaintext_listen(args.listen, None, "c3-storaged")
    config = StoragedConfig(
        server_credentials=credentials,
        data_dir=args.data_dir,
        listen=args.listen,
        max_blob_bytes=args.max_blob_bytes,
        gc_interval_seconds=args.gc_interval,
        gc_grace_seconds=args.gc_grace,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with await StoragedServer.start(config, verifier) as server:
        logging.getLogger("storaged").info(
            "serving on %s, data in %s", server.address, args.data_dir
        )
        if args.ready_file is not None:
            _write_ready(args.ready_file, server.address)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except C3Error as exc:
        print(f"c3-storaged: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        print(f"c3-storaged: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
