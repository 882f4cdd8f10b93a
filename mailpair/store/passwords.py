"""Password hashing with scrypt, tuned so one login costs tens of milliseconds.

Hashes are self-describing ("$scrypt$ln=14,r=8,p=1$salt$hash", base64), so the cost can be raised
later without breaking stored accounts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

LOG_N = 14  # 2**14 * 8 * 128 bytes = 16 MiB of memory, about 35 ms on a 2-core machine
R = 8
P = 1


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def hash_password(password: str, log_n: int = LOG_N) -> str:
    if not password:
        raise ValueError("password is empty")
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=2**log_n, r=R, p=P, maxmem=256 * 1024 * 1024, dklen=32)
    return f"$scrypt$ln={log_n},r={R},p={P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, scheme, params, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kv = dict(p.split("=") for p in params.split(","))
        dk = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=2 ** int(kv["ln"]),
            r=int(kv["r"]),
            p=int(kv["p"]),
            maxmem=256 * 1024 * 1024,
            dklen=len(_unb64(digest)),
        )
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(dk, _unb64(digest))
