"""The loop between the IMAP sessions and what serves them, as an explicit interface, and the
one implementation of it that needs no socket.

A session calls its host (`SessionHost`) for what is shared across connections: settings, the
store, \\Recent claims, structure caches, the login penalty, per-user connection counts,
and to leave (`forget`). The host calls each session back (`SessionPeer`) when the store changed
something it may show (`notify`), when the account's credentials changed (`revoke`) and when it
shuts down (`say_bye`, then `abort`).

`ImapHost` keeps all of that and runs a session over any `Transport` (`serve`); the asyncio
listener (server.py) is an ImapHost that also accepts TCP connections, and tests run whole
sessions through `serve` with a MemoryTransport and no socket at all.

Rules kept:
- Store change notifications arrive on a database's writer thread and are handed to the event
  loop before any session is touched (sessions are single-threaded, on the loop).
- A session is in `sessions` from the moment `serve` starts until it calls `forget`; user
  connection counts follow logins and `forget` exactly, and so do the per-address counts of
  sessions not logged in (`admit`, `logged_in`, `forget`).
- The login penalty and the per-address counts (guard.py) are shared by every host on the same
  store (the imap and imaps listeners), so switching ports gains an attacker nothing.
- A change of an account's password or its deletion, committed here or applied by replay from
  the other node, ends every session of that account with BYE (issue 17).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from typing import Protocol

from mailpair.protocols.imap import metrics
from mailpair.protocols.imap.fetch import StructureCache
from mailpair.protocols.imap.guard import Guard, LoginPenalty
from mailpair.protocols.imap.selected import RecentTracker
from mailpair.protocols.imap.session import Session
from mailpair.protocols.imap.settings import ImapSettings
from mailpair.protocols.imap.transport import Transport
from mailpair.store import Change, NodeStore
from mailpair.store.authcache import AuthCache
from mailpair.store.records import RecordType

# Records after which an account's open sessions must end (their credentials are no longer the
# ones they logged in with), and what the BYE says.
_ENDS_SESSIONS = {
    RecordType.ACCOUNT_PASSWD: b"[UNAVAILABLE] the account's password changed; log in again",
    RecordType.ACCOUNT_DEL: b"[UNAVAILABLE] the account was deleted",
}

_GUARDS: weakref.WeakKeyDictionary[NodeStore, Guard] = weakref.WeakKeyDictionary()


def shared_guard(store: NodeStore, settings: ImapSettings) -> Guard:
    """The login penalty and per-address counts of every IMAP host on this store."""
    guard = _GUARDS.get(store)
    if guard is None:
        guard = _GUARDS[store] = Guard(LoginPenalty(settings))
    return guard


log = logging.getLogger("mailpair.imap")


class SessionPeer(Protocol):
    """What a host calls on each of its sessions."""

    user: str | None

    def notify(self) -> None:
        """The store changed something the session may have to show (on the event loop)."""

    def say_bye(self, text: bytes) -> None:
        """Write `* BYE text` now and close (the host is shutting down)."""

    def revoke(self, text: bytes) -> None:
        """The account's credentials changed: `* BYE text`, close, no further command."""

    def abort(self) -> None:
        """Drop the connection without waiting for the client."""


class SessionHost(Protocol):
    """What a session calls on its host."""

    settings: ImapSettings
    store: NodeStore
    ssl_context: ssl.SSLContext | None  # None: no STARTTLS offered
    closing: bool
    recent: RecentTracker
    user_connections: dict[str, int]
    auth_cache: AuthCache  # recent successful logins (store/authcache.py)
    # user -> how many times its credentials changed while this host ran: a login that saw the
    # count change while it checked a password does not stand
    credential_changes: dict[str, int]

    def session_count(self) -> int: ...

    def structure_cache(self, db) -> StructureCache: ...

    def watch(self, db) -> None: ...

    def forget(self, session: SessionPeer) -> None: ...

    penalty: LoginPenalty  # the login penalty (guard.py), waited out before every password check

    def admit(self, session) -> bool:
        """Whether a new session may go on (its address is under its limit of sessions not
        logged in); counts it if so."""

    def logged_in(self, session) -> None:
        """The session logged in: it no longer counts against its address's pre-login limit."""


class ImapHost:
    """Sessions, change routing and login bookkeeping, over any transport; no listener."""

    def __init__(self, store: NodeStore, settings: ImapSettings, ssl_context: ssl.SSLContext | None = None):
        self.store = store
        self.settings = settings
        self.ssl_context = ssl_context
        self.sessions: set[Session] = set()
        self.recent = RecentTracker()
        self.user_connections: dict[str, int] = {}
        self.auth_cache = AuthCache(settings.auth_cache_ttl)
        self.credential_changes: dict[str, int] = {}
        self.guard = shared_guard(store, settings)
        self.penalty = self.guard.penalty
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening: list = []
        self._tasks: set[asyncio.Task] = set()
        self._structure_caches: dict[str, StructureCache] = {}

    def attach(self) -> None:
        """Bind to the running event loop and follow every database's changes."""
        self._loop = asyncio.get_running_loop()
        for db in self.store.databases.values():
            self.watch(db)

    async def serve(self, transport: Transport) -> None:
        """Run one session over transport until it ends."""
        if self._loop is None:
            self.attach()
        session = Session(self, transport)
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

    # ------------------------------------------------------------------ SessionHost
    def session_count(self) -> int:
        return len(self.sessions)

    def watch(self, db) -> None:
        """Follow a database's changes (also one created after the host started)."""
        if db not in self._listening:
            db.add_listener(self._on_changes)
            self._listening.append(db)

    def structure_cache(self, db) -> StructureCache:
        cache = self._structure_caches.get(db.name)
        if cache is None:
            cache = self._structure_caches[db.name] = StructureCache()
        return cache

    def admit(self, session: Session) -> bool:
        if not self.guard.admission.enter(session.address, self.settings.max_preauth_per_address):
            log.warning("IMAP: refused a connection from %s: too many not logged in from %s", session.peer, session.address)
            return False
        session.preauth_counted = True
        return True

    def logged_in(self, session: Session) -> None:
        if session.preauth_counted:
            session.preauth_counted = False
            self.guard.admission.leave(session.address)

    def forget(self, session: SessionPeer) -> None:
        self.sessions.discard(session)  # type: ignore[arg-type]
        if getattr(session, "preauth_counted", False):
            self.logged_in(session)  # type: ignore[arg-type]
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
        ended: dict[str, bytes] = {}
        for c in changes:
            if c.type in _ENDS_SESSIONS:
                ended.update(dict.fromkeys(c.accounts, _ENDS_SESSIONS[c.type]))
            if c.mailbox_ids:
                boxes.update(c.mailbox_ids)
            else:
                accounts.update(c.accounts)
        for user in ended:
            self.auth_cache.forget(user)
            self.credential_changes[user] = self.credential_changes.get(user, 0) + 1
        if ended:
            for s in list(self.sessions):
                if s.user in ended:
                    s.revoke(ended[s.user])
        for s in self.sessions:
            sel = s.sel
            if sel is not None and (sel.box_id in boxes or s.user in accounts):
                s.notify()

    # ------------------------------------------------------------------ shutdown
    async def close_sessions(self) -> None:
        """BYE to every session, then wait a little for them to end, then cut them off."""
        self.closing = True
        for db in self._listening:
            db.remove_listener(self._on_changes)
        for s in list(self.sessions):
            s.say_bye(b"server shutting down")
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1)
            # A TLS close waits for the client's close_notify; do not wait on clients for long.
            for s in list(self.sessions):
                s.abort()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
