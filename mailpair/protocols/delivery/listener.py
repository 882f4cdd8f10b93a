"""A running LMTP or SMTP listener: its servers (TCP, and a Unix socket for LMTP), its sessions,
who may connect, and the orderly shutdown.

Rules this module keeps: close() stops accepting first; idle sessions get 421 at once; a delivery
being committed finishes and gets its reply before its session closes (nothing acknowledged is
lost, nothing durable goes unanswered), within settings.shutdown_grace. A connection is admitted
as admission.py decides (a total, and a share per address), counted here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from mailpair.protocols.delivery.admission import refusal
from mailpair.protocols.delivery.agent import DeliveryAgent
from mailpair.protocols.delivery.metrics import COMMANDS, CONNECTIONS, OPEN, REFUSED
from mailpair.protocols.delivery.replies import REPLY_TOO_MANY_FROM_ADDRESS
from mailpair.protocols.delivery.session import DeliverySession
from mailpair.protocols.delivery.settings import DeliverySettings
from mailpair.store import NodeStore

logger = logging.getLogger("mailpair.delivery")
# aiosmtpd logs every command line at INFO ("mail.log"); at delivery rates that is most of the CPU.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class Listener:
    """A running LMTP or SMTP listener: `.port` (TCP), `.unix_path`, `async close()`."""

    def __init__(self, store: NodeStore, settings: DeliverySettings, protocol: str, session_cls: type[DeliverySession]):
        self.store = store
        self.settings = settings
        self.protocol = protocol
        self.session_cls = session_cls
        self.agent = DeliveryAgent(store, settings, protocol)
        self.sessions: set[DeliverySession] = set()
        self.per_address: dict[str, int] = {}  # open connections by address_key
        self._warned: set[str] = set()  # addresses refused and logged, once until they drop to none
        self.servers: list[asyncio.AbstractServer] = []
        self.port = 0
        self.unix_path: str | None = None
        self.session_kwargs: dict[str, Any] = {}
        self.connections = CONNECTIONS.labels(protocol)
        self.refused = REFUSED.labels(protocol)
        self.open = OPEN.labels(protocol)
        self._command_counters: dict[str, Any] = {}
        self._on_close: list[Callable[[], None]] = []

    def command_counters(self, name: str) -> Any:
        c = self._command_counters.get(name)
        if c is None:
            c = self._command_counters[name] = COMMANDS.labels(self.protocol, name)
        return c

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run fn when the listener has closed (to remove what its start made, say)."""
        self._on_close.append(fn)

    def admit(self, address: str | None) -> str | None:
        """Count a new connection from address in, or the reply refusing it."""
        from_address = None if address is None else self.per_address.get(address, 0)
        reply = refusal(self.settings, self.agent.closing, len(self.sessions), from_address)
        if reply is not None:
            self.refused.inc()
            if reply is REPLY_TOO_MANY_FROM_ADDRESS and address not in self._warned:
                self._warned.add(address)
                logger.warning("%s: refused a connection from %s (%s open from there)", self.protocol, address, from_address)
            return reply
        if address is not None:
            self.per_address[address] = self.per_address.get(address, 0) + 1
        self.connections.inc()
        self.open.inc()
        return None

    def release(self, address: str | None) -> None:
        """An admitted connection from address has closed."""
        self.open.dec()
        if address is not None:
            left = self.per_address.get(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)
                self._warned.discard(address)

    def _factory(self) -> DeliverySession:
        return self.session_cls(self, **self.session_kwargs)

    async def start(self, unix_socket: str | None = None) -> Listener:
        loop = asyncio.get_running_loop()
        s = self.settings
        server = await loop.create_server(self._factory, host=s.host, port=s.port, reuse_address=True)
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if unix_socket:
            if os.path.exists(unix_socket):
                os.unlink(unix_socket)  # a stale socket of an earlier run; the data dir lock protects a live one
            userver = await loop.create_unix_server(self._factory, path=unix_socket)
            os.chmod(unix_socket, s.unix_socket_mode)
            self.servers.append(userver)
            self.unix_path = unix_socket
        logger.info("%s listening on %s:%d%s", self.protocol, s.host, self.port, f" and {unix_socket}" if unix_socket else "")
        return self

    async def close(self) -> None:
        """Stop listening; idle sessions get 421 at once, deliveries being committed finish and
        get their reply first."""
        self.agent.closing = True
        for server in self.servers:
            server.close()
        for sess in list(self.sessions):
            sess.shutdown()
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for sess in list(self.sessions):
            if sess.transport is not None:
                sess.transport.close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass
        for fn in self._on_close:
            fn()
