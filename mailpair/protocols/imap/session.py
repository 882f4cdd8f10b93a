"""One client connection over a Transport (transport.py; no socket here): reading commands, the
state machine (not authenticated, authenticated, selected, logout), dispatch to the command
handlers, untagged updates, time-outs.

Handlers are `async def handler(session, tag, args) -> bytes` returning the tagged reply's text
("OK ..."); they write untagged responses with `session.send`. Before a tagged reply the session
folds in what other sessions and deliveries changed in the selected mailbox (EXPUNGE is held
back during FETCH, STORE and SEARCH, as RFC 9051 7.5.1 requires).

What a session asks of its host and what the host calls back is the interface in host.py
(SessionHost / SessionPeer).

Time limits (issue 17: idle connections that never log in held slots for ever): before login the
session has `preauth_timeout` seconds from connecting, whatever it sends meanwhile; once logged
in, `idle_timeout` between commands. A literal must arrive at `min_data_rate` bytes/s on average
past `data_rate_grace` seconds (one sent a byte at a time no longer holds the connection for
ever), and inside a command no single read may wait longer than `command_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from mailpair.protocols.imap import framing, metrics, mutf7, reads, wire
from mailpair.protocols.imap.args import Args, Atom, ParseError, tokenize
from mailpair.protocols.imap.guard import address_key
from mailpair.protocols.imap.selected import Selected
from mailpair.store.errors import (
    MailboxExists,
    NoSuchMailbox,
    NotActive,
    OverQuota,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from mailpair.store.names import InvalidName

if TYPE_CHECKING:
    from mailpair.protocols.imap.host import SessionHost
    from mailpair.protocols.imap.transport import Transport
    from mailpair.store import Database

log = logging.getLogger("mailpair.imap")
T = TypeVar("T")

Handler = Callable[["Session", bytes, Args], Awaitable[bytes]]
HANDLERS: dict[str, tuple[Handler, frozenset[str]]] = {}
ANY = frozenset({"notauth", "auth", "selected"})
AUTH = frozenset({"auth", "selected"})
SELECTED = frozenset({"selected"})
NOTAUTH = frozenset({"notauth"})
# Commands during which EXPUNGE must not be sent (message numbers would shift under the client).
_NO_EXPUNGE = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "SORT", "THREAD"}


def command(name: str, states: frozenset[str]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = (fn, states)
        return fn

    return register


class No(Exception):
    """A command refused with NO [code] text."""

    def __init__(self, text: str, code: bytes | None = None):
        super().__init__(text)
        self.code = code


class Bad(Exception):
    pass


class Answered(Exception):
    """The handler already sent its tagged reply (STARTTLS)."""


class Closed(Exception):
    """The connection is gone or must end."""


def store_error_reply(e: StoreError) -> tuple[bytes | None, str]:
    if isinstance(e, NoSuchMailbox):
        return b"NONEXISTENT", str(e)
    if isinstance(e, MailboxExists):
        return b"ALREADYEXISTS", str(e)
    if isinstance(e, OverQuota):
        return b"OVERQUOTA", str(e)
    if isinstance(e, TooLarge):
        return b"TOOBIG", str(e)
    if isinstance(e, NotActive | StoreUnavailable):
        return b"UNAVAILABLE", str(e)
    if isinstance(e, InvalidName):
        return b"CANNOT", str(e)
    return None, str(e)


_preauth: tuple[int, frozenset[str]] = (-1, frozenset())


def preauth_commands() -> frozenset[str]:
    """The commands a client may send before logging in (the only ones whose literals are read);
    worked out again only when a handler was registered since."""
    global _preauth
    if _preauth[0] != len(HANDLERS):
        _preauth = (len(HANDLERS), frozenset(name for name, (_, states) in HANDLERS.items() if "notauth" in states))
    return _preauth[1]


def _clean(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")[:400]


class Session:
    def __init__(self, server: SessionHost, transport: Transport):
        self.server = server
        self.settings = server.settings
        self.transport = transport
        self.framer = framing.Framer(
            self.settings.max_command_bytes,
            self.settings.literal_limit(),
            preauth_literal_bytes=self.settings.preauth_literal_bytes,
            preauth_commands=preauth_commands(),
        )
        self.state = "notauth"
        self.user: str | None = None
        self.db: Database | None = None
        self.sel: Selected | None = None
        self.enabled: set[str] = set()
        self.condstore = False
        self.saved: set[int] | None = None  # SEARCHRES
        self.dirty = False
        self.wake = asyncio.Event()
        self.peer = transport.peer
        self._read_task: asyncio.Task | None = None
        self.inflater = None  # zlib objects once COMPRESS DEFLATE is on
        self.deflater = None
        self._out: list[bytes] = []
        self.current = ""  # name of the command being run
        self.address = address_key(self.peer)  # what it counts against per address (guard.py)
        self.preauth_counted = False  # counted among its address's connections not logged in
        self.revoked = False  # the account's credentials changed: no command runs any more
        loop = asyncio.get_running_loop()
        self._connected = loop.time()
        self._literal_started: float | None = None  # when the literal being read began to arrive
        self._literal_bytes = 0

    # ------------------------------------------------------------------ output
    def send(self, data: bytes) -> None:
        self._out.append(data)

    def _pack(self, data: bytes) -> bytes:
        if self.deflater is not None:  # COMPRESS=DEFLATE: one sync flush per write
            return self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        return data

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.transport.write(self._pack(data))
        await self.transport.drain()

    def say_bye(self, text: bytes) -> None:
        """Write a BYE now (server shutdown) and close."""
        try:
            self.transport.write(self._pack(b"".join(self._out) + b"* BYE " + text + b"\r\n"))
            self._out.clear()
            self.transport.close()
        except (ConnectionError, RuntimeError):
            pass

    def abort(self) -> None:
        self.transport.abort()

    @property
    def tls(self) -> bool:
        return self.transport.tls

    def feed(self, data: bytes) -> None:
        if self.inflater is not None:
            try:
                data = self.inflater.decompress(data)
            except zlib.error:
                raise Closed("bad compressed data from the client") from None
        self.framer.feed(data)

    @property
    def utf8(self) -> bool:
        # IMAP4rev2 (RFC 9051 appendix E) carries UTF-8 mailbox names and strings as UTF8=ACCEPT does.
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    def mailbox_out(self, name: str) -> bytes:
        if self.utf8:
            return wire.astring(name.encode("utf-8"), utf8=True)
        return wire.astring(mutf7.encode(name).encode("ascii"))

    def mailbox_in(self, raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("mailbox name is not UTF-8") from None
        if self.utf8 or not text.isascii():
            return text
        try:
            return mutf7.decode(text)
        except mutf7.BadName as e:
            # A well-formed astring that is no valid modified UTF-7 (RFC 3501 5.1.3) names no
            # mailbox that can exist: NO, not BAD (the command's syntax is fine).
            raise No(str(e), b"CANNOT") from None

    def end(self, text: bytes, reason: str) -> None:
        """The server ends this session for a defence: BYE, count it, close."""
        metrics.CLOSED.labels(reason).inc()
        log.info("IMAP: closing the session of %s from %s: %s", self.user or "(not logged in)", self.peer, reason)
        self.send(b"* BYE " + text + b"\r\n")

    def revoke(self, text: bytes) -> None:
        """The account's password changed or the account is gone (on the event loop, from the host):
        `* BYE text` now, wherever the session is, and let no further command run."""
        if self.revoked:
            return
        self.revoked = True
        self.state = "logout"
        metrics.CLOSED.labels("credentials changed").inc()
        log.info("IMAP: ending the session of %s from %s: the account's credentials changed", self.user, self.peer)
        self.say_bye(text)

    async def unless_hangup(self, aw: Awaitable[T]) -> T:
        """Await aw, but end the session (Closed) if the client hangs up first. Bytes that arrive
        meanwhile stay for the next command (the read is left in _read_task, as IDLE leaves it)."""
        job = asyncio.ensure_future(aw)
        if self._read_task is None:
            self._read_task = asyncio.ensure_future(self.transport.read(65536))
        watch = self._read_task
        try:
            done, _ = await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
            if job not in done and (watch.exception() is not None or not watch.result()):
                raise Closed("client closed the connection")
            return await job
        finally:
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)

    # ------------------------------------------------------------------ input
    async def _more(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(max(timeout, 0)):
                if self._read_task is not None:  # a read IDLE left pending
                    task, self._read_task = self._read_task, None
                    data = await task
                else:
                    data = await self.transport.read(65536)
        except TimeoutError:
            raise Closed("time-out") from None
        if not data:
            raise Closed("client closed the connection")
        self._literal_bytes += len(data)
        self.feed(data)

    def _limit(self, now: float) -> tuple[float, bytes, str]:
        """How long the next read may wait, and what to say if it times out."""
        s = self.settings
        if not self.framer.in_literal:
            self._literal_started = None
        elif self._literal_started is None:
            self._literal_started, self._literal_bytes = now, 0
        if self.framer.mid_command:
            limit = (s.command_timeout, b"Autologout; idle for too long", "command time-out")
            if self._literal_started is not None and s.min_data_rate > 0:
                # past the grace, the bytes so far must cover min_data_rate for the time so far
                until = self._literal_started + s.data_rate_grace + self._literal_bytes / s.min_data_rate
                if until - now < s.command_timeout:
                    limit = (until - now, b"Autologout; the literal arrives too slowly", "slow literal")
        elif self.state == "notauth":
            limit = (self._connected + s.preauth_timeout - now, b"Autologout; log in sooner", "pre-login time-out")
        else:
            limit = (s.idle_timeout, b"Autologout; idle for too long", "idle time-out")
        if self.state == "notauth":
            left = self._connected + s.preauth_timeout - now
            if left < limit[0]:
                limit = (left, b"Autologout; log in sooner", "pre-login time-out")
        return limit

    async def next_event(self) -> framing.Event:
        loop = asyncio.get_running_loop()
        while True:
            ev = self.framer.next_event()
            if ev is not None:
                return ev
            timeout, bye, reason = self._limit(loop.time())
            try:
                await self._more(timeout)
            except Closed as e:
                if str(e) == "time-out":
                    self.end(bye, reason)
                raise

    async def read_line(self) -> bytes:
        """One raw line (AUTHENTICATE answers)."""
        self.framer.line_mode = True
        try:
            while True:
                ev = await self.next_event()
                if isinstance(ev, framing.Line):
                    return ev.line
        finally:
            self.framer.line_mode = False

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        try:
            if self.server.closing:
                self.send(b"* BYE server shutting down\r\n")
                return
            if self.server.session_count() > self.settings.max_connections:
                metrics.REFUSED.labels("too many connections").inc()
                self.send(b"* BYE [UNAVAILABLE] too many connections; try again later\r\n")
                return
            if not self.server.admit(self):
                metrics.REFUSED.labels("too many from the address").inc()
                self.send(b"* BYE [UNAVAILABLE] too many connections from your address; try again later\r\n")
                return
            caps = b" ".join(self.capabilities())
            self.send(b"* OK [CAPABILITY " + caps + b"] mailpair IMAP ready\r\n")
            await self.flush()
            while self.state != "logout":
                ev = await self.next_event()
                if isinstance(ev, framing.Continue):
                    self.send(b"+ Ready for literal data\r\n")
                elif isinstance(ev, framing.Refused):
                    tag = ev.tag or b"*"
                    if ev.code == b"TOOBIG":
                        self.send(tag + b" NO [TOOBIG] " + _clean(ev.reason) + b"\r\n")
                    else:
                        self.send(tag + b" BAD " + _clean(ev.reason) + b"\r\n")
                    if ev.close:
                        self.end(b"literal refused before login", "literal before login")
                        raise Closed("literal refused before login")
                elif isinstance(ev, framing.Command):
                    await self.execute(ev.segments)
                elif isinstance(ev, framing.Line):  # pragma: no cover - line mode is scoped
                    pass
                await self.flush()
        except (Closed, OSError, asyncio.IncompleteReadError):
            pass  # the client went away (or TLS broke): nothing to answer
        finally:
            await self.close()

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            self._read_task = None
        try:
            if self._out and not self.transport.is_closing():
                self.transport.write(self._pack(b"".join(self._out)))
                self._out.clear()
            self.transport.close()
        except (ConnectionError, RuntimeError):
            pass
        self.server.forget(self)

    def capabilities(self) -> list[bytes]:
        caps = [b"IMAP4rev1", b"IMAP4rev2", b"LITERAL+", b"SASL-IR", b"ID", b"ENABLE", b"IDLE"]
        if self.server.ssl_context is not None and not self.tls:
            caps.append(b"STARTTLS")
        if self.state == "notauth":
            if self.tls or self.settings.plaintext_allowed():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
            return caps
        caps += [
            b"NAMESPACE",
            b"UNSELECT",
            b"UIDPLUS",
            b"MOVE",
            b"CONDSTORE",
            b"QRESYNC",
            b"SPECIAL-USE",
            b"CREATE-SPECIAL-USE",
            b"LIST-EXTENDED",
            b"LIST-STATUS",
            b"ESEARCH",
            b"SEARCHRES",
            b"CHILDREN",
            b"BINARY",
            b"QUOTA",
            b"QUOTA=RES-STORAGE",
            b"APPENDLIMIT=%d" % self.settings.literal_limit(),
            b"STATUS=SIZE",
            b"UTF8=ACCEPT",
            b"WITHIN",
            b"SORT",
            b"SORT=DISPLAY",
            b"THREAD=ORDEREDSUBJECT",
            b"THREAD=REFERENCES",
            b"COMPRESS=DEFLATE",
            b"MULTIAPPEND",
            b"CATENATE",
            b"ESORT",
            b"PARTIAL",
        ]
        return caps

    async def execute(self, segments: list[bytes]) -> None:
        tag = framing.tag_of(segments[0] + b" ") or b"*"
        started = time.perf_counter()
        try:
            values = tokenize(segments)
            if len(values) < 2 or not isinstance(values[0], Atom) or not isinstance(values[1], Atom):
                raise ParseError("expected: tag command [arguments]")
            if framing.tag_of(values[0].encode("utf-8", "surrogateescape") + b" ") is None:
                raise ParseError("bad tag")
            tag = values[0].encode()
            name = values[1].upper()
            rest = values[2:]
            if name == "UID":
                if not rest or not isinstance(rest[0], Atom):
                    raise ParseError("UID needs a command")
                name = "UID " + rest[0].upper()
                rest = rest[1:]
        except ParseError as e:
            self.send(tag + b" BAD " + _clean(str(e)) + b"\r\n")
            return
        entry = HANDLERS.get(name)
        if entry is None:
            self.send(tag + b" BAD unknown command " + _clean(name[:40]) + b"\r\n")
            return
        fn, states = entry
        if self.state not in states:
            why = {"notauth": "log in first", "auth": "select a mailbox first"}.get(self.state, "not allowed now")
            if states == NOTAUTH:
                why = "already logged in"
            self.send(tag + b" BAD " + name.encode() + b" not allowed now: " + why.encode() + b"\r\n")
            return
        if self.revoked:
            raise Closed("credentials changed")
        self.current = name
        try:
            reply = await fn(self, tag, Args(rest))
        except Answered:
            return
        except ParseError as e:
            reply = b"BAD " + _clean(str(e))
        except Bad as e:
            reply = b"BAD " + _clean(str(e))
        except No as e:
            reply = b"NO " + (b"[" + e.code + b"] " if e.code else b"") + _clean(str(e))
        except StoreError as e:
            code, text = store_error_reply(e)
            reply = b"NO " + (b"[" + code + b"] " if code else b"") + _clean(text)
        except (Closed, ConnectionError, ssl.SSLError):
            raise
        except RecursionError:
            reply = b"BAD command nested too deeply"
        except Exception:
            log.exception("IMAP %s failed", name)
            reply = b"NO [SERVERBUG] internal error; the command was not completed"
        if self.state == "selected" and self.sel is not None:
            try:
                await self.sync(allow_expunge=name.split()[-1] not in _NO_EXPUNGE)
            except (Closed, ConnectionError, ssl.SSLError):
                raise
            except Exception:  # updates can wait for the next command; the reply cannot
                log.exception("IMAP: reading mailbox changes failed")
                self.dirty = True
        elapsed = time.perf_counter() - started
        metrics.observe(name, reply, elapsed)
        self.send(tag + b" " + reply + (b" (%.3f secs)" % elapsed if reply.startswith(b"OK") else b"") + b"\r\n")
        self.current = ""

    def logged_in(self, user: str, db: Database) -> None:
        """LOGIN/AUTHENTICATE succeeded: authenticated state and its limits from here on."""
        self.user = user
        self.db = db
        self.state = "auth"
        self.framer.authenticated = True
        self.server.logged_in(self)

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): the first one while a mailbox is selected
        also reports the mailbox's HIGHESTMODSEQ, so the client has a base for what follows."""
        if self.condstore:
            return
        self.condstore = True
        if self.sel is not None:
            self.send(b"* OK [HIGHESTMODSEQ %d] highest modseq\r\n" % self.sel.highestmodseq)

    # ------------------------------------------------------------------ selected-state updates
    def notify(self) -> None:
        """Called on the event loop when the store changed something this session may show."""
        self.dirty = True
        self.wake.set()

    async def sync(self, allow_expunge: bool = True) -> None:
        sel = self.sel
        if sel is None or self.db is None or not self.dirty:
            if sel is not None and allow_expunge and sel.pending_expunge:
                self.send(b"".join(sel.expunge_now(sorted(sel.pending_expunge), self.qresync)))
            return
        self.dirty = False
        lsn = self.db.applied_lsn  # before the read: a commit racing with it shows as a newer LSN
        row, msgs, gone = await self.db.read(reads.changes_since, sel.box_id, sel.highestmodseq)
        if self.sel is not sel:
            return
        sel.synced_lsn = lsn
        lines = sel.apply(row, msgs, gone, self.server.recent, allow_expunge, self.condstore, self.qresync)
        if self.rev2:
            lines = [x for x in lines if not x.endswith(b" RECENT\r\n")]
        self.send(b"".join(lines))
        if sel.deleted:
            self.send(b"* BYE the selected mailbox was deleted\r\n")
            self.state = "logout"
