"""TLS for the TCP Live endpoint: google-genai always dials ``wss://``.

Without ``live.tls_cert``/``live.tls_key`` geminid makes (once) a self-signed certificate for
127.0.0.1, ::1 and localhost in ``<state_dir>/live_tls/`` (key 0600); a client trusts that
certificate file (``ca_file`` in ``daemon.status``). ``cryptography`` is imported only here, and
only when a certificate has to be made.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

import attrs

from geminid.daemon.errors import ConfigError

DIR_NAME = "live_tls"


@attrs.frozen
class CertPair:
    cert: Path
    key: Path
    #: What a client should trust: the self-signed certificate itself (None for a user's own).
    ca_file: Path | None


def ensure_self_signed(state_dir: Path) -> CertPair:
    """The self-signed pair in the state dir, made if missing (blocking: run in a thread)."""
    folder = state_dir / DIR_NAME
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key.exists():
        return CertPair(cert, key, cert)
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("live: making a TLS certificate needs the 'cryptography' package "
                          "(or set live.tls_cert and live.tls_key, or live.tls = false)") from None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "geminid local Live endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key, key_bytes, 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return CertPair(cert, key, cert)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def server_context(pair: CertPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(pair.cert, pair.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"live.tls_cert/live.tls_key: cannot load {pair.cert}: {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
