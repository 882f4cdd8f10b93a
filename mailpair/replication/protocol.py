"""Framing of the replication channel.

A frame is `length u32 | crc32c u32 | body`, body a msgpack map with a type under "t". The frame's
own checksum catches damage in transit before anything in it is believed (records also carry
their own checksum, checked again by inspection). A frame that is too long, fails its checksum
or does not decode is a protocol error: the connection is dropped and the passive asks again
from its stored LSN, so nothing damaged is ever used.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import crc32c
import msgpack

HEADER = struct.Struct("<II")
MAX_FRAME = 96 * 1024 * 1024  # a batch of records; a single record is at most one segment (32 MiB)
VERSION = 1


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class PeerError(Exception):
    """The peer answered with an error message ({"t": "error", "code", "msg"})."""

    def __init__(self, code: str, message: str, lsn: int | None = None):
        super().__init__(message)
        self.code = code
        self.lsn = lsn


def encode(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return HEADER.pack(len(body), crc32c.crc32c(body)) + body


async def read_frame(reader: asyncio.StreamReader, timeout: float | None = None) -> dict[str, Any]:
    """Read one message; raises ProtocolError on damage, asyncio.TimeoutError on a stalled peer,
    asyncio.IncompleteReadError when the peer closed."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
    # arrives as the read completes, and a reader that cannot be cancelled hangs its owner.
    async with asyncio.timeout(timeout):
        head = await reader.readexactly(HEADER.size)
    length, crc = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes is over the limit of {MAX_FRAME}")
    async with asyncio.timeout(timeout):
        body = await reader.readexactly(length)
    if crc32c.crc32c(body) != crc:
        raise ProtocolError("frame failed its checksum (damaged in transit)")
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
    writer.write(encode(msg))
    async with asyncio.timeout(timeout):
        await writer.drain()


def error(code: str, message: str, lsn: int | None = None) -> dict[str, Any]:
    return {"t": "error", "code": code, "msg": message, "lsn": lsn}
