"""`c3-coordinator`: the control plane process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from c3.errors import C3Error
from c3.tls import warn_if_plaintext_listen
from coordinator.app import Coordinator
from coordinator.config import DEFAULT_LISTEN, DEFAULT_STORAGE, CoordinatorConfig, env


def parse_args(argv: list[str] | None) -> CoordinatorConfig:
    p = argparse.ArgumentParser(prog="c3-coordinator", description="c3 control plane")
    p.add_argument("--listen", default=env("C3_COORDINATOR_LISTEN", DEFAULT_LISTEN),
                   help="host:port to serve on; port 0 picks a free one")  # fmt: skip
    p.add_argument("--data-dir", default=env("C3_COORDINATOR_DATA_DIR", ""),
                   help="directory for the coordinator's database")  # fmt: skip
    p.add_argument("--storage-address", default=env("C3_STORAGE_ADDRESS", DEFAULT_STORAGE))
    p.add_argument("--signing-key", default=env("C3_SIGNING_KEY", ""),
                   help="Ed25519 PEM used to sign storage tokens (created when missing)")  # fmt: skip
    p.add_argument("--ready-file", default=env("C3_COORDINATOR_READY_FILE", ""),
                   help="written with host:port once serving")  # fmt: skip
    p.add_argument("--bootstrap-file", default=env("C3_COORDINATOR_BOOTSTRAP_FILE", ""),
                   help="on an empty database, write the local org's credentials here")  # fmt: skip
    p.add_argument("--heartbeat-ms", type=int, default=int(env("C3_HEARTBEAT_MS", "2000")))
    p.add_argument("--log-cap-bytes", type=int,
                   default=int(env("C3_JOB_LOG_CAP_BYTES", str(64 * 1024 * 1024))))  # fmt: skip
    p.add_argument("--tls-cert", default=env("C3_COORDINATOR_TLS_CERT", ""), help="server certificate (PEM)")
    p.add_argument("--tls-key", default=env("C3_COORDINATOR_TLS_KEY", ""), help="server private key (PEM)")
    p.add_argument("--tls-client-ca", default=env("C3_COORDINATOR_TLS_CLIENT_CA", ""),
                   help="require client certificates signed by this CA (mutual TLS)")  # fmt: skip
    p.add_argument("--storage-tls-ca", default=env("C3_STORAGE_TLS_CA", ""),
                   help="CA to trust when dialing storaged over TLS")  # fmt: skip
    p.add_argument("--pool-config", default=env("C3_POOL_CONFIG", ""),
                   help="YAML warm pools and providers (local, slurm); none: no pool")  # fmt: skip
    p.add_argument("--bootstrap-plan", default=env("C3_BOOTSTRAP_PLAN", "free"),
                   help="plan of the org created on an empty database")  # fmt: skip
    p.add_argument("--concurrency-limits", default=env("C3_CONCURRENCY_LIMITS", ""),
                   help="jobs at once per plan, e.g. free=1,pro=10,team=50 (0: no limit)")  # fmt: skip
    p.add_argument("--starting-credit-minor", type=int,
                   default=int(env("C3_STARTING_CREDIT_MINOR", "1000")),
                   help="credit of a new org, in minor currency units")  # fmt: skip
    p.add_argument("--time-limit-grace-s", type=float,
                   default=float(env("C3_TIME_LIMIT_GRACE_S", "30")))  # fmt: skip
    p.add_argument("--keep-finished-s", type=float,
                   default=env("C3_KEEP_FINISHED_S", "600"),
                   help="seconds a finished job stays in memory; the database keeps it for good")  # fmt: skip
    p.add_argument("--log-level", default=env("C3_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    if args.keep_finished_s < 0:
        p.error("--keep-finished-s must be 0 or more")
    limits = CoordinatorConfig.concurrency_limits
    if args.concurrency_limits:
        try:
            parsed = dict(CoordinatorConfig.concurrency_limits)
            for item in args.concurrency_limits.split(","):
                plan, _, value = item.partition("=")
                parsed[plan.strip()] = int(value)
            limits = tuple(parsed.items())
        except ValueError:
            p.error("--concurrency-limits: expected PLAN=N[,PLAN=N...], e.g. free=1,pro=10")
    if not args.data_dir:
        p.error("--data-dir is required (or set C3_COORDINATOR_DATA_DIR)")
    data_dir = Path(args.data_dir).expanduser().resolve()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if not args.tls_cert:
        warn_if_plaintext_listen(args.listen, None, "c3-coordinator")
    if args.heartbeat_ms < 10:
        p.error("--heartbeat-ms must be at least 10")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    return CoordinatorConfig(
        data_dir=data_dir,
        signing_key=Path(args.signing_key) if args.signing_key else data_dir / "signing-key.pem",
        listen=args.listen,
        storage_address=args.storage_address,
        heartbeat_ms=args.heartbeat_ms,
        log_cap_bytes=args.log_cap_bytes,
        ready_file=Path(args.ready_file) if args.ready_file else None,
        bootstrap_file=Path(args.bootstrap_file) if args.bootstrap_file else None,
        pool_config=Path(args.pool_config) if args.pool_config else None,
        bootstrap_plan=args.bootstrap_plan,
        concurrency_limits=limits,
        time_limit_grace_s=args.time_limit_grace_s,
        keep_finished_s=args.keep_finished_s,
        starting_credit_minor=args.starting_credit_minor,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
        storage_tls_ca=Path(args.storage_tls_ca) if args.storage_tls_ca else None,
    )


async def serve(config: CoordinatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with await Coordinator.start(config):
        await stop.wait()
        logging.getLogger(__name__).info("shutting down")


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except C3Error as exc:
        print(f"c3-coordinator: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (OSError, RuntimeError) as exc:  # e.g. the listen address cannot be bound
        print(f"c3-coordinator: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
