"""The replication channel over asyncio streams: the I/O around codec.Channel and nothing else.

A Link reads exactly the bytes its channel says the next frame part needs (so it never buffers
beyond the frame being read, and a frame over the limit is refused after its 12-byte header),
feeds them in, and writes what the channel hands back. Every decision about the bytes is the
codec's; timeouts and closing are the Link's.

The streams may be TLS ones (replication/tls.py makes the contexts): the Link neither knows nor
cares; the codec's HMAC handshake and tags run inside TLS as they do on a plain channel.

Errors: codec.ProtocolError (damage), codec.PeerError (the peer said error), codec.AuthFailed,
TimeoutError (a stalled peer), asyncio.IncompleteReadError (the peer closed), ssl.SSLError (a TLS
peer the pair's authority did not certify, or damage under TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from mailpair.replication.codec import Authenticated, Channel, Message, ProtocolError, Role

# A batch frame (100+ KiB) fits the stream buffer whole, so reading one does not pause and resume
# the transport (asyncio's default limit is 64 KiB, paused beyond twice that).
PASSIVE_READ_BUFFER = 4 * 1024 * 1024


class Link:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: Channel):
        self.reader = reader
        self.writer = writer
        self.channel = channel

    @property
    def peer(self) -> str | None:
        return self.channel.peer

    async def _next_event(self, timeout: float | None):
        while (event := self.channel.next_event()) is None:
            await self._flush()  # a handshake step may have an answer to send before more comes
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the read completes, and a reader that cannot be cancelled hangs
            # its owner.
            async with asyncio.timeout(timeout):
                data = await self.reader.readexactly(self.channel.bytes_needed())
            self.channel.receive_data(data)
        return event

    async def handshake(self, timeout: float | None) -> str:
        """Authenticate both ways within timeout (for the whole exchange); returns the peer's
        node name. On AuthFailed the refusal (if any) is sent to the peer first."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    event = await self._next_event(None)
                finally:
                    await self._flush()
                if isinstance(event, Authenticated):
                    return event.peer

    async def _flush(self) -> None:
        data = self.channel.data_to_send()
        if data:
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message (per read, at most timeout seconds without progress)."""
        event = await self._next_event(timeout)
        if not isinstance(event, Message):
            raise ProtocolError(f"unexpected {type(event).__name__} on an open channel")
        return event.body

    async def send(self, msg: dict[str, Any], timeout: float | None = None) -> None:
        # Encoding and writing with no await between them keeps the tag counter in wire order.
        for part in self.channel.send(msg):
            self.writer.write(part)
        async with asyncio.timeout(timeout):
            await self.writer.drain()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def wait_closed(self, timeout: float = 1.0) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()


async def connect(
    host: str,
    port: int,
    secret: bytes,
    node: str,
    connect_timeout: float,
    handshake_timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Link:
    """Connect to an active (over TLS when tls is given) and authenticate both ways; the
    passive's side."""
    async with asyncio.timeout(connect_timeout):
        reader, writer = await asyncio.open_connection(
            host, port, limit=PASSIVE_READ_BUFFER, ssl=tls, ssl_handshake_timeout=connect_timeout if tls else None
        )
    link = Link(reader, writer, Channel(Role.PASSIVE, secret, node))
    try:
        await link.handshake(handshake_timeout)
    except BaseException:
        link.close()
        raise
    return link
