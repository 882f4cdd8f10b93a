"""Mutual challenge with the shared cluster secret, before anything else is said.

    passive -> active   hello     {node, nonce_p}
    active  -> passive  challenge {node, nonce_a}
    passive -> active   auth      {mac = HMAC(secret, "passive" | nonce_a | nonce_p)}
    active  -> passive  welcome   {mac = HMAC(secret, "active" | nonce_p | nonce_a)}

Each side proves it knows the secret over a nonce the other chose, so a recorded exchange cannot
be replayed and neither side talks to an impostor; the secret itself never crosses the wire.
Both sides then derive one key per direction from the secret and both nonces, and every later
frame carries a tag under it (protocol.secure). The
passive proves itself first, so the active (which holds the data) is the one that refuses and
logs a node with the wrong secret; the passive then checks the active in turn.
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


def _session_keys(secret: bytes, nonce_a: bytes, nonce_p: bytes) -> tuple[bytes, bytes]:
    """(passive-to-active key, active-to-passive key) for this connection."""
    return _mac(secret, b"key p->a", nonce_a, nonce_p), _mac(secret, b"key a->p", nonce_a, nonce_p)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def _nonce(msg: dict) -> bytes:
    nonce = msg.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != 32:
        raise protocol.ProtocolError(f"{msg['t']} without a valid nonce")
    return nonce


async def as_passive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, node: str) -> str:
    """Authenticate to the active; returns the active's node name."""
    nonce_p = secrets.token_bytes(32)
    await protocol.send(writer, {"t": "hello", "v": protocol.VERSION, "node": node, "nonce": nonce_p}, TIMEOUT)
    try:
        msg = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "challenge")
        nonce_a = _nonce(msg)
        await protocol.send(writer, {"t": "auth", "mac": _mac(secret, b"passive", nonce_a, nonce_p)}, TIMEOUT)
        welcome = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "welcome")
    except protocol.PeerError as e:
        raise AuthFailed(f"the active refused this node: {e}") from None
    if not hmac.compare_digest(_mac(secret, b"active", nonce_p, nonce_a), _bytes(welcome.get("mac"))):
        raise AuthFailed(f"the peer claiming to be the active ({msg.get('node')}) does not know the cluster secret")
    to_active, to_passive = _session_keys(secret, nonce_a, nonce_p)
    protocol.secure(reader, writer, send_key=to_active, receive_key=to_passive)
    return str(msg.get("node"))


async def as_active(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, node: str) -> str:
    """Check a connecting passive; returns its node name, or raises AuthFailed (after telling it)."""
    hello = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "hello")
    nonce_p = _nonce(hello)
    peer = str(hello.get("node"))
    if hello.get("v") != protocol.VERSION:
        why = f"node {peer!r} speaks replication protocol {hello.get('v')}, this node {protocol.VERSION}; upgrade both nodes"
        await protocol.send(writer, protocol.error("version", why), TIMEOUT)
        raise AuthFailed(why)
    nonce_a = secrets.token_bytes(32)
    await protocol.send(writer, {"t": "challenge", "node": node, "nonce": nonce_a}, TIMEOUT)
    msg = protocol.expect(await protocol.read_frame(reader, TIMEOUT), "auth")
    if not hmac.compare_digest(_mac(secret, b"passive", nonce_a, nonce_p), _bytes(msg.get("mac"))):
        await protocol.send(writer, protocol.error("auth", "authentication failed: wrong cluster secret"), TIMEOUT)
        raise AuthFailed(f"node {peer!r} failed authentication (wrong cluster secret)")
    await protocol.send(writer, {"t": "welcome", "mac": _mac(secret, b"active", nonce_p, nonce_a)}, TIMEOUT)
    to_active, to_passive = _session_keys(secret, nonce_a, nonce_p)
    protocol.secure(reader, writer, send_key=to_passive, receive_key=to_active)
    return peer
