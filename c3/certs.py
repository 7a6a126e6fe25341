"""Certificates for c3's TLS: `generate(out_dir, hosts)` writes a CA, a server certificate
whose SANs are `hosts`, and a client certificate for agents (mutual TLS), all signed by
that CA. Keys are written 0600."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from c3.errors import ConfigError

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_VALID_DAYS = 825


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    agent_cert: Path
    agent_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "c3"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, hosts: tuple[str, ...] = (),
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)  # fmt: skip
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate(out_dir: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> CertFiles:
    """A fresh CA plus server and agent certificates in `out_dir`."""
    hosts = tuple(h.strip() for h in hosts if h.strip())
    if not hosts:
        raise ConfigError("--hosts is empty: name at least one host or IP the server is reached at")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(*(out_dir / n for n in (
        "ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "agent.pem", "agent-key.pem")))  # fmt: skip
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("c3 local CA", ca_key, _name("c3 local CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(hosts[0], server_key, ca_cert.subject, ca_key, hosts=hosts,
                         usage=[ExtendedKeyUsageOID.SERVER_AUTH])  # fmt: skip
    agent_key = ec.generate_private_key(ec.SECP256R1())
    agent_cert = _issue("c3 agent", agent_key, ca_cert.subject, ca_key,
                        usage=[ExtendedKeyUsageOID.CLIENT_AUTH])  # fmt: skip
    pem = serialization.Encoding.PEM
    _write(files.ca_cert, ca_cert.public_bytes(pem), private=False)
    _write(files.ca_key, _key_pem(ca_key), private=True)
    _write(files.server_cert, server_cert.public_bytes(pem), private=False)
    _write(files.server_key, _key_pem(server_key), private=True)
    _write(files.agent_cert, agent_cert.public_bytes(pem), private=False)
    _write(files.agent_key, _key_pem(agent_key), private=True)
    return files


