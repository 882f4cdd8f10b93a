"""Mutual challenge with the shared cluster secret, before anything else is said.

    passive -> active   hello     {node, nonce_p}
    active  -> passive  challenge {node, nonce_a, mac = HMAC(secret, "active" | nonce_p | nonce_a)}
    passive -> active   auth      {mac = HMAC(secret, "passive" | nonce_a | nonce_p)}
    active  -> passive  welcome

Each side proves it knows the secret over a nonce the other chose, so a recorded exchange cannot
be replayed and neither side talks to an impostor. The secret itself never crosses the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from mailpair.replication import protocol

TIMEOUT = 10.0


class AuthFailed(Exception):
    pass


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + b"|" + first + b"|" + second, hashlib.sha256).digest()


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


async def as_passive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, node: str) -> str:
    """Authenticate to the active; returns the active's node name."""
    nonce_p = secrets.token_bytes(32)
    await protocol.send(writer, {"t": "hello", "v": protocol.VERSION, "node": node, "nonce": nonce_p}, TIMEOUT)
    try:
        msg = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "challenge")
    except protocol.PeerError as e:
        raise AuthFailed(f"the active refused us: {e}") from None
    nonce_a = msg.get("nonce")
    if not isinstance(nonce_a, bytes) or len(nonce_a) != 32:
        raise protocol.ProtocolError("challenge without a valid nonce")
    if not hmac.compare_digest(_mac(secret, b"active", nonce_p, nonce_a), _bytes(msg.get("mac"))):
        raise AuthFailed(f"the peer claiming to be the active ({msg.get('node')}) does not know the cluster secret")
    await protocol.send(writer, {"t": "auth", "mac": _mac(secret, b"passive", nonce_a, nonce_p)}, TIMEOUT)
    try:
        protocol.expect(await protocol.read_frame(reader, TIMEOUT), "welcome")
    except protocol.PeerError as e:
        raise AuthFailed(f"the active refused us: {e}") from None
    return str(msg.get("node"))


async def as_active(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, node: str) -> str:
    """Check a connecting passive; returns its node name, or raises AuthFailed (after telling it)."""
    hello = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "hello")
    nonce_p = hello.get("nonce")
    peer = str(hello.get("node"))
    if not isinstance(nonce_p, bytes) or len(nonce_p) != 32:
        raise protocol.ProtocolError("hello without a valid nonce")
    nonce_a = secrets.token_bytes(32)
    mac = _mac(secret, b"active", nonce_p, nonce_a)
    await protocol.send(writer, {"t": "challenge", "node": node, "nonce": nonce_a, "mac": mac}, TIMEOUT)
    msg = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "auth")
    if not hmac.compare_digest(_mac(secret, b"passive", nonce_a, nonce_p), _bytes(msg.get("mac"))):
        await protocol.send(writer, protocol.error("auth", "authentication failed: wrong cluster secret"), TIMEOUT)
        raise AuthFailed(f"node {peer!r} failed authentication (wrong cluster secret)")
    await protocol.send(writer, {"t": "welcome"}, TIMEOUT)
    return peer
