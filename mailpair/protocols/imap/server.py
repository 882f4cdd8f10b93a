"""The asyncio listener: an ImapHost (host.py) that also accepts TCP connections, each run as a
session over a StreamTransport; TLS settings. All session logic lives in session.py and host.py,
so nothing here needs testing beyond 'connections arrive and the port closes'."""

from __future__ import annotations

import asyncio
import ssl

from mailpair.protocols.imap.host import ImapHost
from mailpair.protocols.imap.settings import ImapSettings
from mailpair.protocols.imap.transport import StreamTransport
from mailpair.store import NodeStore


def make_ssl_context(settings: ImapSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


class ImapServer(ImapHost):
    def __init__(self, store: NodeStore, settings: ImapSettings):
        super().__init__(store, settings, make_ssl_context(settings))
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> ImapServer:
        self.attach()
        ssl_ctx = self.ssl_context if self.settings.implicit_tls else None
        self._server = await asyncio.start_server(self._accept, self.settings.host, self.settings.port, ssl=ssl_ctx, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.serve(StreamTransport(reader, writer))

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        await self.close_sessions()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                pass
