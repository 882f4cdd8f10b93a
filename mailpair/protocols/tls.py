"""The node's TLS certificate for STARTTLS (SMTP, IMAP) and implicit-TLS IMAP.

A configured certificate is used as is. Without one, a self-signed certificate for the host name
is made once with `openssl` and kept, so clients that pinned it on first use see the same one
after a restart.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, hostname: str, prefix: str = "node") -> tuple[Path, Path]:
    """(cert, key) in directory, made with openssl if they are not there yet."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{prefix}-cert.pem", directory / f"{prefix}-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "825", "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key
