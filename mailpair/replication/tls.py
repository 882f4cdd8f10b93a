"""TLS for the replication channel: the pair's own certificate authority, a certificate per node,
and the two contexts (the active's server side, the passive's client side).

Rules this module keeps: both ends present a certificate and each accepts only one issued by the
pair's authority (mutual TLS, TLS 1.3 or later; the system's trust store plays no part), so a peer
with a certificate the pair did not make is refused before a byte of the replication protocol is
read. TLS adds secrecy; the codec's HMAC handshake and tags stay as they are, so a stolen
certificate without the cluster secret gets no further than before. A plain channel exists only
when the operator asks for it (transport "plain"), and status says so.

Layout, made by `pair up` (or supplied by an operator, in the node's config):
    DIR/ca/ca-cert.pem, ca-key.pem          the pair's authority (0600 files in a 0700 directory)
    DATA/tls/replication-cert.pem, -key.pem  this node's certificate, CN = the node's name
    DATA/tls/replication-ca.pem             the authority's certificate, the only one trusted
"""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
from pathlib import Path

TRANSPORTS = ("tls", "plain")
CA_DAYS = 3650
NODE_DAYS = 825


class TlsSetupError(Exception):
    """The replication channel cannot be set up as configured (missing or unusable files)."""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_authority(ca_dir: Path, name: str = "mailpair pair") -> tuple[Path, Path]:
    """(cert, key) of the pair's certificate authority in ca_dir, made once."""
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = ca_dir / "ca-cert.pem", ca_dir / "ca-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", str(CA_DAYS), "-subj", f"/CN={name} replication CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def issue_node_certificate(ca_dir: Path, tls_dir: Path, node: str) -> tuple[Path, Path, Path]:
    """(cert, key, ca) for node in tls_dir, signed by the authority in ca_dir; made once."""
    ca_cert, ca_key = make_authority(ca_dir)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key, ca = tls_dir / "replication-cert.pem", tls_dir / "replication-key.pem", tls_dir / "replication-ca.pem"
    if not (cert.exists() and key.exists()):
        csr = tls_dir / "replication.csr"
        ext = tls_dir / "replication.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        try:
            _openssl(
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-subj", f"/CN={node}", "-keyout", str(key), "-out", str(csr),
            )  # fmt: skip
            key.chmod(0o600)
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
                "-days", str(NODE_DAYS), "-extfile", str(ext), "-out", str(cert),
            )  # fmt: skip
        finally:
            csr.unlink(missing_ok=True)
            ext.unlink(missing_ok=True)
            (ca_dir / "ca-cert.srl").unlink(missing_ok=True)
    shutil.copyfile(ca_cert, ca)
    for path in (cert, ca):
        path.chmod(0o600)
    return cert, key, ca


def _check(cert: str | None, key: str | None, ca: str | None) -> tuple[str, str, str]:
    missing = [
        f"{what} {path}"
        for what, path in (("certificate", cert), ("key", key), ("CA", ca))
        if not path or not Path(path).exists()
    ]
    if missing:
        raise TlsSetupError(
            "replication over TLS needs this node's certificate and the pair's CA; missing: "
            + ", ".join(missing)
            + ' (`mailpair pair up` makes them; or set replication_transport to "plain" on a trusted link)'
        )
    return str(cert), str(key), str(ca)


def _context(purpose: ssl.Purpose, cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext:
    cert, key, ca = _check(cert, key, ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The peer is known by the pair's authority and then by the cluster secret, not by a host name
    # (nodes move between addresses): no name check, and no other authority trusted.
    ctx.check_hostname = False
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise TlsSetupError(f"replication TLS files unusable ({cert}, {key}, {ca}): {e}") from e
    return ctx


@functools.lru_cache(maxsize=8)
def server_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext:
    """The active's side: it requires a client certificate from the pair's authority."""
    return _context(ssl.Purpose.CLIENT_AUTH, cert, key, ca)


@functools.lru_cache(maxsize=8)
def client_context(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext:
    """The passive's side: it presents its certificate and accepts only an active's from the pair."""
    return _context(ssl.Purpose.SERVER_AUTH, cert, key, ca)


def server_context_for(settings) -> ssl.SSLContext | None:  # settings: ReplicationSettings
    """The active's context for these settings; None for a plain channel."""
    if _transport(settings) == "plain":
        return None
    return server_context(settings.tls_cert, settings.tls_key, settings.tls_ca)


def client_context_for(settings) -> ssl.SSLContext | None:
    """The passive's context for these settings; None for a plain channel."""
    if _transport(settings) == "plain":
        return None
    return client_context(settings.tls_cert, settings.tls_key, settings.tls_ca)


def _transport(settings) -> str:
    if settings.transport not in TRANSPORTS:
        raise TlsSetupError(f"replication transport must be one of {', '.join(TRANSPORTS)}, not {settings.transport!r}")
    return settings.transport
