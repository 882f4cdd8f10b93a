"""The asyncio listener: accepts connections, runs a Session for each, routes store change
notifications to the sessions that need them, and says BYE to everyone on close."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from mailpair.protocols.imap import metrics
from mailpair.protocols.imap.fetch import StructureCache
from mailpair.protocols.imap.selected import RecentTracker
from mailpair.protocols.imap.session import Session
from mailpair.protocols.imap.settings import ImapSettings
from mailpair.store import Change, NodeStore

log = logging.getLogger("mailpair.imap")


def make_ssl_context(settings: ImapSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


class ImapServer:
    def __init__(self, store: NodeStore, settings: ImapSettings):
        self.store = store
        self.settings = settings
        self.ssl_context = make_ssl_context(settings)
        self.sessions: set[Session] = set()
        self.recent = RecentTracker()
        self.user_connections: dict[str, int] = {}
        self.failures: dict[str, tuple[int, float]] = {}  # address -> (count, last time)
        self.closing = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening: list = []
        self._tasks: set[asyncio.Task] = set()
        self._structure_caches: dict[str, StructureCache] = {}

    async def start(self) -> ImapServer:
        self._loop = asyncio.get_running_loop()
        for db in self.store.databases.values():
            self.watch(db)
        ssl_ctx = self.ssl_context if self.settings.implicit_tls else None
        self._server = await asyncio.start_server(self._accept, self.settings.host, self.settings.port, ssl=ssl_ctx, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object") is not None
        session = Session(self, reader, writer, tls)
        self.sessions.add(session)
        metrics.CONNECTIONS.inc()
        metrics.SESSIONS.inc()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass  # shutdown cancelled it: end quietly (asyncio would log a cancelled handler)
        finally:
            metrics.SESSIONS.dec()
            if task is not None:
                self._tasks.discard(task)

    def watch(self, db) -> None:
        """Follow a database's changes (also one created after the listener started)."""
        if db not in self._listening:
            db.add_listener(self._on_changes)
            self._listening.append(db)

    def structure_cache(self, db) -> StructureCache:
        cache = self._structure_caches.get(db.name)
        if cache is None:
            cache = self._structure_caches[db.name] = StructureCache()
        return cache

    def forget(self, session: Session) -> None:
        self.sessions.discard(session)
        if session.user is not None:
            n = self.user_connections.get(session.user, 1) - 1
            if n <= 0:
                self.user_connections.pop(session.user, None)
            else:
                self.user_connections[session.user] = n
            session.user = None

    # ------------------------------------------------------------------ change routing
    def _on_changes(self, changes: list[Change]) -> None:
        """Runs on a database's writer thread: hop onto the event loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._route, changes)
        except RuntimeError:
            pass  # the loop is closed

    def _route(self, changes: list[Change]) -> None:
        boxes: set[int] = set()
        accounts: set[str] = set()
        for c in changes:
            if c.mailbox_ids:
                boxes.update(c.mailbox_ids)
            else:
                accounts.update(c.accounts)
        for s in self.sessions:
            sel = s.sel
            if sel is not None and (sel.box_id in boxes or s.user in accounts):
                s.notify()

    # ------------------------------------------------------------------ failed logins
    def login_delay(self, address: str) -> float:
        count, last = self.failures.get(address, (0, 0.0))
        if time.monotonic() - last > 300:
            return 0.0
        return min(count, 5) * self.settings.login_delay

    def login_failed(self, address: str) -> None:
        count, last = self.failures.get(address, (0, 0.0))
        if time.monotonic() - last > 300:
            count = 0
        self.failures[address] = (count + 1, time.monotonic())
        if len(self.failures) > 10_000:  # forget the oldest so a scan cannot grow memory
            for k in sorted(self.failures, key=lambda k: self.failures[k][1])[:5000]:
                del self.failures[k]

    def login_succeeded(self, address: str) -> None:
        self.failures.pop(address, None)

    # ------------------------------------------------------------------ shutdown
    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for db in self._listening:
            db.remove_listener(self._on_changes)
        for s in list(self.sessions):
            s.say_bye(b"server shutting down")
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1)
            # A TLS close waits for the client's close_notify; do not wait on clients for long.
            for s in list(self.sessions):
                s.writer.transport.abort()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                pass
