"""Framing of the replication channel.

A frame is `length u32 | crc32c(body) u32 | crc32c(the 8 bytes before) u32 | body`, body a msgpack
map with a type under "t". The header's own checksum catches a damaged length at once (instead of
waiting for bytes that never come); the body's catches damage in transit before anything in it is
believed (records also carry
their own checksum, checked again by inspection). Once the peers have authenticated (auth.py),
every frame also ends in a 16-byte HMAC-SHA256 tag under a per-connection key and a per-direction
frame counter, so someone on the path can neither alter records (and fix up the CRCs), nor
replay, drop or reorder frames without the receiver noticing. A frame that is too long, fails its checksum
or does not decode is a protocol error: the connection is dropped and the passive asks again
from its stored LSN, so nothing damaged is ever used.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
from typing import Any

import crc32c
import msgpack

from mailpair.store.records import pack

HEADER = struct.Struct("<III")  # length, body crc, crc of the two before
_HEADER_START = struct.Struct("<II")
TAG_SIZE = 16
_COUNTER = struct.Struct("<Q")
_CRC = struct.Struct("<I")
MAX_FRAME = 96 * 1024 * 1024  # a batch of records; a single record is at most one segment (32 MiB)
JOIN_BELOW = 64 * 1024
# 2: frame headers carry their own checksum. Frames of versions 1 and 2 differ, so a node of one
# cannot read even the hello of the other (it reports damaged frames): upgrade both nodes together.
VERSION = 2


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class PeerError(Exception):
    """The peer answered with an error message ({"t": "error", "code", "msg"})."""

    def __init__(self, code: str, message: str, lsn: int | None = None):
        super().__init__(message)
        self.code = code
        self.lsn = lsn


class _MacState:
    """One direction of an authenticated connection: its key and the next frame's number."""

    __slots__ = ("key", "counter")

    def __init__(self, key: bytes):
        self.key = key
        self.counter = 0

    def tag(self, body: bytes) -> bytes:
        mac = hmac.new(self.key, _COUNTER.pack(self.counter), hashlib.sha256)
        mac.update(body)  # not counter + body: a copy of a large batch costs more than its hash
        self.counter += 1
        return mac.digest()[:TAG_SIZE]


def secure(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send_key: bytes, receive_key: bytes) -> None:
    """From now on, frames on this connection carry and must carry a valid tag."""
    writer._mailpair_mac = _MacState(send_key)  # type: ignore[attr-defined]
    reader._mailpair_mac = _MacState(receive_key)  # type: ignore[attr-defined]


def frame_header(body: bytes) -> bytes:
    start = _HEADER_START.pack(len(body), crc32c.crc32c(body))
    return start + _CRC.pack(crc32c.crc32c(start))


def encode_parts(msg: dict[str, Any], mac: _MacState | None = None) -> list[bytes]:
    """A frame as the pieces to write one after the other: one piece for a small frame, three for
    a batch of records, because joining a header to a body of 100+ KiB costs more than packing
    and checksumming it."""
    body = pack(msg)  # a reused Packer: packb's fresh one regrows its buffer for every batch
    parts = [frame_header(body), body]
    if mac is not None:
        parts.append(mac.tag(body))
    return parts if len(body) > JOIN_BELOW else [b"".join(parts)]


def encode(msg: dict[str, Any], mac: _MacState | None = None) -> bytes:
    return b"".join(encode_parts(msg, mac))


async def read_frame(reader: asyncio.StreamReader, timeout: float | None = None) -> dict[str, Any]:
    """Read one message; raises ProtocolError on damage, asyncio.TimeoutError on a stalled peer,
    asyncio.IncompleteReadError when the peer closed."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
    # arrives as the read completes, and a reader that cannot be cancelled hangs its owner.
    async with asyncio.timeout(timeout):
        head = await reader.readexactly(HEADER.size)
    length, crc, head_crc = HEADER.unpack(head)
    if crc32c.crc32c(head[: _HEADER_START.size]) != head_crc:
        raise ProtocolError("frame header failed its checksum (damaged in transit)")
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes is over the limit of {MAX_FRAME}")
    async with asyncio.timeout(timeout):
        body = await reader.readexactly(length)
    if crc32c.crc32c(body) != crc:
        raise ProtocolError("frame failed its checksum (damaged in transit)")
    mac = getattr(reader, "_mailpair_mac", None)
    if mac is not None:
        async with asyncio.timeout(timeout):
            tag = await reader.readexactly(TAG_SIZE)
        if not hmac.compare_digest(mac.tag(body), tag):
            raise ProtocolError("frame failed its authentication tag (altered, replayed or out of order)")
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolError(f"frame does not decode: {e}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("frame is not a message")
    if msg["t"] == "error":
        raise PeerError(str(msg.get("code")), str(msg.get("msg")), msg.get("lsn"))
    return msg


def expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    if msg["t"] != kind:
        raise ProtocolError(f"expected a {kind} message, got {msg['t']}")
    return msg


async def send(writer: asyncio.StreamWriter, msg: dict[str, Any], timeout: float | None = None) -> None:
    # Encoding and writing with no await between them keeps the counter in wire order.
    for part in encode_parts(msg, getattr(writer, "_mailpair_mac", None)):
        writer.write(part)
    async with asyncio.timeout(timeout):
        await writer.drain()


def error(code: str, message: str, lsn: int | None = None) -> dict[str, Any]:
    return {"t": "error", "code": code, "msg": message, "lsn": lsn}
