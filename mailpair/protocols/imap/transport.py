"""The byte pipe under an IMAP session, as an interface, and its two implementations.

A `Session` never touches a socket: it reads and writes through a `Transport`. The asyncio
listener wraps each accepted connection in a `StreamTransport`; tests (and anything else that
wants to run IMAP without a network, like h11's tests do for HTTP) use a `MemoryTransport`,
which holds what the client sent and what the server answered in memory.

Rules kept:
- `read(n)` returns at most n bytes, waits until there is at least one, and returns b"" once the
  peer has closed (end of stream); it never returns b"" otherwise.
- `write` queues bytes in order and never blocks; `drain` waits until the peer can take more
  (back-pressure); both raise ConnectionError once the pipe is broken.
- `close` is polite (queued bytes still go out), `abort` is not; both may be called again.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Protocol

# Linux only; elsewhere delayed ACKs stay as the system has them.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class Transport(Protocol):
    """What a session needs from its connection."""

    peer: str  # the client's address, for the failed-login bookkeeping
    tls: bool  # the bytes are encrypted on the wire (implicit TLS or after STARTTLS)

    async def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    async def start_tls(self, context: ssl.SSLContext) -> None: ...


class StreamTransport:
    """A TCP connection accepted by asyncio.start_server.

    ACKs go out at once (TCP_QUICKACK, re-armed after every read and write, as Dovecot does):
    a client that writes a literal and its final CRLF in two writes without TCP_NODELAY (Python's
    imaplib, among others) holds the CRLF back under Nagle until the literal is acknowledged,
    and the kernel delays that ACK (up to 40 ms on Linux) waiting for a reply that cannot come
    before the CRLF. Linux clears the setting by itself after a while and whenever the
    connection looks interactive again (a write soon after a read), hence the re-arming."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.tls = writer.get_extra_info("ssl_object") is not None
        self.peer = str((writer.get_extra_info("peername") or ("?", 0))[0])
        self._sock = writer.get_extra_info("socket")
        self._quick_ack()

    def _quick_ack(self) -> None:
        if _QUICKACK is None or self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass  # not TCP (a Unix socket in some test), or already closed: nothing to speed up

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        self._quick_ack()
        return data

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self._quick_ack()

    async def drain(self) -> None:
        await self.writer.drain()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        await self.writer.start_tls(context)
        self.tls = True


class MemoryTransport:
    """Both ends of a connection in memory: the client side calls `send`/`send_eof` and reads
    `received()`/`wait_for`; the session side is the Transport interface. One event loop."""

    def __init__(self, peer: str = "memory", tls: bool = False):
        self.peer = peer
        self.tls = tls
        self._inbox = bytearray()
        self._eof = False
        self._readable = asyncio.Event()
        self._outbox = bytearray()
        self._written = asyncio.Event()
        self._closed = False

    # -- the client's side
    def send(self, data: bytes) -> None:
        """Bytes from the client to the server."""
        if self._eof:
            raise ConnectionError("client already closed its side")
        self._inbox += data
        self._readable.set()

    def send_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def received(self) -> bytes:
        """Everything the server wrote so far (and forget it)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    async def wait_for(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """The server's output up to and including the first line that starts with marker (a
        tag and a space, or b"+ "); the rest stays for the next call."""
        async with asyncio.timeout(timeout):
            while True:
                start = 0
                while True:
                    end = self._outbox.find(b"\r\n", start)
                    if end < 0:
                        break
                    if self._outbox.startswith(marker, start):
                        out = bytes(self._outbox[: end + 2])
                        del self._outbox[: end + 2]
                        return out
                    start = end + 2
                if self._closed:
                    raise ConnectionError(f"server closed before {marker!r}")
                self._written.clear()
                await self._written.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the session's side (Transport)
    async def read(self, n: int) -> bytes:
        while not self._inbox:
            if self._eof or self._closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._inbox[:n])
        del self._inbox[:n]
        return data

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("transport closed")
        self._outbox += data
        self._written.set()

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("transport closed")

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._written.set()
        self._readable.set()

    def abort(self) -> None:
        self.close()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        raise ConnectionError("no TLS over a memory transport")
