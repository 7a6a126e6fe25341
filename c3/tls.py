"""TLS for every TCP hop: gRPC credentials from certificate files, and the plaintext
warnings. Servers load `--tls-cert/--tls-key [--tls-client-ca]`; clients trust the CA.
Certificates themselves come from `c3.certs` (kept apart: `cryptography` is slow to
import and only `c3ctl admin certs` / `c3ctl up --tls` need it)."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import grpc

from c3.errors import ConfigError

log = logging.getLogger(__name__)



def _read(path: str | Path, flag: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read ({exc.strerror}); check the path") from exc


def server_credentials(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None
) -> grpc.ServerCredentials:
    """Server TLS; with a client CA, clients must present a certificate it signed (mTLS)."""
    pair = [(_read(key_file, "--tls-key"), _read(cert_file, "--tls-cert"))]
    if client_ca_file:
        return grpc.ssl_server_credentials(
            pair, root_certificates=_read(client_ca_file, "--tls-client-ca"),
            require_client_auth=True,
        )  # fmt: skip
    return grpc.ssl_server_credentials(pair)


def channel_credentials(
    ca_file: str | Path | None = None, cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:  # fmt: skip
    """Client TLS trusting `ca_file` (system roots when empty), with an optional client cert."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError("a TLS client certificate needs both the cert and the key file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "TLS CA file") if ca_file else None,
        private_key=_read(key_file, "TLS key file") if key_file else None,
        certificate_chain=_read(cert_file, "TLS cert file") if cert_file else None,
    )


def credentials_for(settings: object) -> grpc.ChannelCredentials | None:
    """Channel credentials from a TlsSettings-like object (or a daemon ClientTls); None
    when TLS is off."""
    if not getattr(settings, "enabled", False):
        return None
    return channel_credentials(
        getattr(settings, "ca_file", "") or None, getattr(settings, "cert_file", "") or None,
        getattr(settings, "key_file", "") or None,
    )  # fmt: skip


def is_loopback(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_plaintext(address: str, credentials: object | None, who: str = "c3") -> bool:
    """Plaintext beyond loopback works but is warned about (stderr); True when warned."""
    if credentials is not None or is_loopback(address):
        return False
    print(f"{who}: warning: plaintext connection to {address} (not loopback); "
          "enable TLS (tls.enabled in the config, or --tls-ca) so keys are not sent in clear",
          file=sys.stderr)  # fmt: skip
    return True


def warn_if_plaintext_listen(address: str, credentials: object | None, who: str) -> bool:
    if credentials is not None or is_loopback(address):
        return False
    log.warning("%s: serving plaintext on %s (not loopback); pass --tls-cert/--tls-key", who,
                address)
    print(f"{who}: warning: serving plaintext on {address} (not loopback); "
          "pass --tls-cert and --tls-key", file=sys.stderr)  # fmt: skip
    return True
