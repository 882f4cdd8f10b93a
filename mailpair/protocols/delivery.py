"""Mail delivery into the store, shared by the LMTP and SMTP listeners.

One accepted message becomes one `deliver` store operation per database for all its recipients
(the store answers per recipient), after a Return-Path and a Received header are prepended. A
reply is sent only after the store said the delivery is durable (fsync'd log record); every store
error maps to the reply an MTA acts on: 550 5.1.1 unknown user, 552 5.2.2 over quota, 552 5.3.4
too big, 451 4.3.0 when the store cannot make it durable (the MTA retries), 421 when shutting down.

The session class reads DATA itself (rather than aiosmtpd's line-by-line loop) so that it can
refuse bare LF, NUL bytes and over-long lines with an error per recipient, stop a message that
never ends, and read a normal message in a handful of buffer scans.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import Counter, Gauge, Histogram

from mailpair.store import (
    NodeStore,
    NoSuchAccount,
    OverQuota,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from mailpair.store.database import Change, Database
from mailpair.store.names import InvalidName, check_user
from mailpair.store.records import RecordType

log = logging.getLogger("mailpair.delivery")
# aiosmtpd logs every command line at INFO ("mail.log"); at delivery rates that is most of the CPU.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# ---------------------------------------------------------------------------- metrics
CONNECTIONS = Counter("mailpair_delivery_connections_total", "Delivery connections accepted", ["protocol"])
REFUSED = Counter("mailpair_delivery_connections_refused_total", "Connections refused (limit or shutdown)", ["protocol"])
OPEN = Gauge("mailpair_delivery_open_connections", "Delivery connections open now", ["protocol"])
COMMANDS = Counter("mailpair_delivery_commands_total", "Commands received", ["protocol", "command"])
DELIVERIES = Counter("mailpair_deliveries_total", "Per-recipient delivery results", ["protocol", "result"])
DELIVERY_SECONDS = Histogram(
    "mailpair_delivery_seconds",
    "From the end of DATA to the reply (parse, durable commit)",
    ["protocol"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


# ---------------------------------------------------------------------------- settings
@dataclass
class DeliverySettings:
    host: str = "127.0.0.1"
    port: int = 0
    domain: str = "example.test"
    extra_domains: tuple[str, ...] = ()  # more domains whose users live here
    hostname: str | None = None  # name in the greeting and Received header; default: domain
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 200
    # RFC 5322 allows 998 octets per line; Postfix wraps at 999, so 1000 accepts every standard MTA.
    max_line_length: int = 1000
    command_timeout: float = 300.0  # idle time between commands (RFC 5321 4.5.3.2: 5 minutes)
    data_timeout: float = 600.0  # whole DATA transfer of one message
    recipient_delimiter: str = "+"
    unix_socket: str | None = None  # LMTP only: also listen on this path
    unix_socket_mode: int = 0o660
    tls_cert: str | None = None  # SMTP STARTTLS; a self-signed pair is made when both are None
    tls_key: str | None = None
    tls_dir: str | None = None  # where the self-signed pair goes (default: a temporary directory)
    shutdown_grace: float = 10.0  # seconds close() waits for deliveries in progress


# ---------------------------------------------------------------------------- replies
REPLY_SHUTDOWN = "421 4.3.2 Service shutting down, try again later"


def store_error_reply(rcpt: str, err: BaseException) -> tuple[str, str]:
    """(reply, metric result) for a store error on one recipient."""
    if isinstance(err, NoSuchAccount):
        return f"550 5.1.1 <{rcpt}> User unknown", "unknown_user"
    if isinstance(err, OverQuota):
        return f"552 5.2.2 <{rcpt}> Mailbox full (over quota)", "over_quota"
    if isinstance(err, TooLarge):
        return f"552 5.3.4 <{rcpt}> Message too big for this system", "too_big"
    if isinstance(err, StoreUnavailable):  # includes NotActive
        return f"451 4.3.0 <{rcpt}> Mail store cannot take mail now, try again later", "unavailable"
    # Anything else the store refused: temporary, so the MTA keeps the message rather than lose it.
    return f"451 4.3.0 <{rcpt}> Temporary store error, try again later", "error"


@dataclass(slots=True)
class Recipient:
    address: str  # as given in RCPT
    user: str
    folder: str | None
    db: Database


_PRINTABLE = re.compile(r"[^\x21-\x7e]")


def _clean(text: str | None, fallback: str = "unknown") -> str:
    """A client-supplied word made safe for a header: no spaces, controls or non-ASCII."""
    return _PRINTABLE.sub("?", text)[:255] if text else fallback


# ---------------------------------------------------------------------------- delivery agent
class DeliveryAgent:
    """The aiosmtpd handler: recipient checks at RCPT, and the delivery after DATA."""

    def __init__(self, store: NodeStore, settings: DeliverySettings, protocol: str):
        self.store = store
        self.settings = settings
        self.protocol = protocol
        self.hostname = settings.hostname or settings.domain
        self.domains = {settings.domain.lower(), *(d.lower() for d in settings.extra_domains)}
        self.closing = False
        self._known: dict[str, Database] = {}  # account -> its database (positive answers only)
        self._watched: set[int] = set()
        self._results = {
            r: DELIVERIES.labels(protocol, r)
            for r in ("ok", "unknown_user", "over_quota", "too_big", "unavailable", "error", "rejected")
        }
        self._seconds = DELIVERY_SECONDS.labels(protocol)
        self._seq = 0

    # ------------------------------------------------------------------ accounts
    def _watch(self, db: Database) -> None:
        """Forget cached accounts when they are deleted (listener runs on the writer thread)."""
        if id(db) in self._watched:
            return
        self._watched.add(id(db))

        def on_change(changes: list[Change]) -> None:
            for ch in changes:
                if ch.type is RecordType.ACCOUNT_DEL:
                    for name in ch.accounts:
                        self._known.pop(name, None)  # a dict pop is atomic under the GIL

        db.add_listener(on_change)

    async def _find_account(self, user: str) -> Database | None:
        db = self._known.get(user)
        if db is not None:
            return db
        for each in list(self.store.databases.values()):
            self._watch(each)  # before the lookup, so a delete right after it still evicts
        db = await self.store.find_database(user)
        if db is not None:
            self._known[user] = db
        return db

    async def resolve(self, address: str) -> Recipient | str:
        """A recipient address -> Recipient, or the reply refusing it."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, self.settings.domain  # LMTP peers may send bare user names
        if not local or (domain.lower() not in self.domains):
            return f"550 5.1.1 <{address}> Recipient address rejected: domain not served here"
        user = local.lower()
        candidates: list[tuple[str, str | None]] = [(user, None)]
        delim = self.settings.recipient_delimiter
        if delim and delim in user:
            # user+detail: the detail names a folder (kept as written: folder names are
            # case-sensitive). A user name may itself hold the delimiter, so it is tried second.
            candidates.insert(0, (user.partition(delim)[0], local.partition(delim)[2] or None))
        for user, folder in candidates:
            try:
                check_user(user)
            except InvalidName:
                continue
            try:
                db = await self._find_account(user)
            except StoreError as e:
                return store_error_reply(address, e)[0]
            if db is not None:
                return Recipient(address, user, folder, db)
        return f"550 5.1.1 <{address}> User unknown"

    # ------------------------------------------------------------------ aiosmtpd hooks
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return lines

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if self.closing:
            return REPLY_SHUTDOWN
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.settings.max_recipients} per message)"
        found = await self.resolve(address)
        if isinstance(found, str):
            self._results["rejected"].inc()
            return found
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        envelope.recipients.append(found)  # type: ignore[attr-defined]
        return f"250 2.1.5 <{address}> Recipient ok"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("%s session error", self.protocol, exc_info=error)
        return "451 4.3.0 Internal error, try again later"

    # ------------------------------------------------------------------ delivery
    def trace_headers(self, session: Session, envelope: Envelope, with_proto: str) -> bytes:
        """Return-Path and Received (RFC 5321 4.4) for this message."""
        sender = envelope.mail_from or ""
        if sender == "<>":
            sender = ""
        peer = session.peer
        ip = peer[0] if isinstance(peer, tuple) and peer else "local"
        self._seq += 1
        qid = f"{time.time_ns() // 1000:x}.{os.getpid():x}.{self._seq:x}"
        rcpts = envelope.rcpt_tos
        for_part = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
        text = (
            f"Return-Path: <{sender}>\r\n"
            f"Received: from {_clean(session.host_name)} ([{ip}])\r\n"
            f"\tby {self.hostname} (mailpair) with {with_proto} id {qid}{for_part};\r\n"
            f"\t{email.utils.formatdate(localtime=False)}\r\n"
        )
        return text.encode("utf-8", "surrogateescape")

    async def deliver(self, trace: bytes, content: bytes, recipients: list[Recipient]) -> list[str]:
        """Store one message for all recipients; the reply for each, in order. Only after the
        store reports the record durable does any recipient get a 250."""
        started = time.perf_counter()
        replies: list[str] = [""] * len(recipients)
        raw = trace + content
        limit = self.settings.max_message_bytes + len(trace)
        try:
            prepared = await self.store.preparer.prepare(raw, limit)
        except TooLarge as e:
            return self._all(recipients, e)
        except Exception as e:  # a parser failure must not lose the message: the MTA retries
            log.exception("cannot parse message")
            return self._all(recipients, StoreError(str(e)))
        by_db: dict[int, tuple[Database, list[int]]] = {}
        for i, r in enumerate(recipients):
            by_db.setdefault(id(r.db), (r.db, []))[1].append(i)
        date = time.time_ns() // 1000  # internal date: the delivery time

        async def one(db: Database, idx: list[int]) -> None:
            try:
                res = await db.acommit(
                    "deliver", recipients=[(recipients[i].user, recipients[i].folder) for i in idx], date=date, **prepared
                )
            except StoreError as e:
                for i in idx:
                    replies[i] = self._reply_error(recipients[i].address, e)
                return
            except Exception as e:
                log.exception("delivery failed")
                for i in idx:
                    replies[i] = self._reply_error(recipients[i].address, StoreError(str(e)))
                return
            lsn = res.get("lsn")
            for i, outcome in zip(idx, res["results"], strict=True):
                if outcome[0] == "ok":
                    replies[i] = f"250 2.0.0 <{recipients[i].address}> Delivered (uid {outcome[2]}, lsn {lsn})"
                    self._results["ok"].inc()
                else:
                    replies[i] = self._reply_error(recipients[i].address, outcome[1])

        groups = list(by_db.values())
        if len(groups) == 1:
            await one(*groups[0])
        else:
            await asyncio.gather(*(one(db, idx) for db, idx in groups))
        self._seconds.observe(time.perf_counter() - started)
        return replies

    def _reply_error(self, rcpt: str, err: BaseException) -> str:
        reply, result = store_error_reply(rcpt, err)
        self._results[result].inc()
        return reply

    def _all(self, recipients: list[Recipient], err: BaseException) -> list[str]:
        return [self._reply_error(r.address, err) for r in recipients]

    def reject_all(self, recipients: list[Recipient], reply: str) -> list[str]:
        self._results["rejected"].inc(len(recipients))
        return [reply] * len(recipients)


# ---------------------------------------------------------------------------- message checks
def content_problem(content: bytes, max_line: int) -> str | None:
    """Why a received message cannot be taken as it is, or None. Checked after dot-unstuffing."""
    if b"\x00" in content:
        return "550 5.6.0 Message contains NUL bytes"
    if content.count(b"\n") != content.count(b"\r\n"):
        return "550 5.6.0 Message contains a bare LF (every line must end with CRLF)"
    if len(content) > max_line and max(map(len, content.split(b"\r\n"))) > max_line:
        return f"550 5.6.0 Message has a line longer than {max_line} bytes"
    return None


def unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: remove the leading dot the client added to lines that start with one."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


class _Abort(Exception):
    """The DATA transfer cannot go on: reply and close the connection."""


# Enhanced status codes (RFC 2034) for aiosmtpd's own replies, which carry none.
_ENHANCED = {
    "221": "2.0.0",
    "250": "2.0.0",
    "421": "4.3.0",
    "451": "4.3.0",
    "452": "4.5.3",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.3.0",
    "555": "5.5.4",
}
# RFC 5321 4.1.2: "FROM:" / "TO:", a path <addr> (<> for MAIL), then optional parameters. Parsed
# here rather than by aiosmtpd, whose parser is lenient ("<a b@c>" and a missing ">" pass) and slow
# (the email package's header parser on every command).
_PATH = re.compile(r"^\s*<(?:@[^:<>\s]*:)?([^<>\s\x00-\x1f\x7f]*)>((?:\s+\S+)*)\s*$")
_MAILBOX = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,256}(?:@[^@\s\x00-\x1f\x7f]{1,255})?$")
_HAS_ENHANCED = re.compile(r"^\d\d\d [245]\.\d{1,3}\.\d{1,3}")


# ---------------------------------------------------------------------------- session
class DeliverySession(SMTP):
    """One client connection (aiosmtpd protocol) with mailpair's DATA, limits and shutdown."""

    protocol_name = "smtp"
    with_proto = "ESMTP"

    def __init__(self, listener: Listener, **kwargs: Any):
        self.listener = listener
        self.agent = listener.agent
        s = listener.settings
        # aiosmtpd sizes the StreamReader from this in __init__; data lines are checked separately.
        self.line_length_limit = max(1001, s.max_line_length + 3)
        super().__init__(
            listener.agent,
            data_size_limit=s.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=listener.agent.hostname,
            ident=f"mailpair {self.protocol_name.upper()} ready",
            timeout=s.command_timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            **kwargs,
        )
        self._raw_replies = False
        self._busy = False
        self._close_after = False
        self._refused = False
        self._held: list[bytes] = []
        counters = listener.command_counters
        # Count every command as it is dispatched.
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = _counted(method, counters(name))

    # ------------------------------------------------------------------ connection bookkeeping
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lst = self.listener
        if self._original_transport is None and self not in lst.sessions:  # not the STARTTLS re-entry
            if lst.agent.closing or len(lst.sessions) >= lst.settings.max_connections:
                self._refused = True
                lst.refused.inc()
                reply = REPLY_SHUTDOWN if lst.agent.closing else "421 4.7.0 Too many connections, try again later"
                transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            lst.sessions.add(self)
            lst.connections.inc()
            lst.open.inc()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self in self.listener.sessions:
            self.listener.sessions.discard(self)
            self.listener.open.dec()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def _create_envelope(self) -> Envelope:
        env = Envelope()
        env.recipients = []  # type: ignore[attr-defined]
        return env

    def shutdown(self) -> None:
        """Say 421 and close, unless a delivery is being committed: then right after its reply."""
        if self._busy:
            self._close_after = True
        elif self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(REPLY_SHUTDOWN.encode() + b"\r\n")  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError, OSError):
                pass  # a TLS session already torn down underneath: closing is all that is left
            self.transport.close()

    # ------------------------------------------------------------------ replies
    async def push(self, status: str | bytes) -> None:
        if (
            not self._raw_replies
            and isinstance(status, str)
            and self.session is not None
            and self.session.extended_smtp
            and len(status) > 4
            and status[3] == " "
            and not _HAS_ENHANCED.match(status)
        ):
            enhanced = _ENHANCED.get(status[:3])
            if enhanced:
                status = f"{status[:3]} {enhanced} {status[4:]}"
        if self._held:  # one write, so one packet
            if isinstance(status, str):
                status = status.encode("utf-8")
            status = b"".join(self._held) + status
            self._held.clear()
        await super().push(status)

    async def reply_soon(self, status: str) -> None:
        """A MAIL/RCPT reply: held back while the client's next command is already here, so a
        pipelined MAIL, RCPT..., DATA is answered in one packet (RFC 2920 3.3); the next push()
        sends it. Only these replies are held: anything that may close the session is not."""
        if b"\n" in self._reader._buffer:  # type: ignore[attr-defined]
            self._held.append(status.encode("utf-8") + b"\r\n")
        else:
            await self.push(status)

    async def _ehlo(self, hostname: str) -> None:
        self._raw_replies = True  # EHLO lines carry no status codes
        try:
            await SMTP.smtp_EHLO(self, hostname)
        finally:
            self._raw_replies = False

    # ------------------------------------------------------------------ MAIL, RCPT
    async def _path(self, keyword: str, arg: str | None, allow_null: bool) -> tuple[str, list[str]] | None:
        """(address, parameters) of a MAIL/RCPT argument, or None after replying with the error."""
        if arg is None or arg[: len(keyword)].upper() != keyword or not arg[len(keyword) :].strip():
            await self.push(f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}:<address> [parameters]")
            return None
        m = _PATH.match(arg[len(keyword) :])
        address = m.group(1) if m else None
        if address is None or not (_MAILBOX.match(address) or (allow_null and address == "")):
            await self.push("553 5.1.3 Error: malformed address (expected <local@domain>)")
            return None
        return address, m.group(2).split()

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        env = self.envelope
        assert env is not None
        if env.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        parsed = await self._path("FROM:", arg, allow_null=True)
        if parsed is None:
            return
        address, params = parsed
        for p in params:
            key, eq, value = p.partition("=")
            key = key.upper()
            if key == "SIZE" and eq and value.isdigit():
                if int(value) > self.listener.settings.max_message_bytes:
                    await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    await self.push("501 5.5.4 BODY can only be 7BIT or 8BITMIME")
                    return
            elif key == "SMTPUTF8" and not eq:
                env.smtp_utf8 = True
            else:
                await self.push(f"555 5.5.4 MAIL FROM parameter {p} not recognized or not implemented")
                return
        env.mail_from = address or "<>"
        env.mail_options.extend(params)
        await self.reply_soon("250 2.1.0 Sender ok")

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        env = self.envelope
        assert env is not None
        if not env.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        parsed = await self._path("TO:", arg, allow_null=False)
        if parsed is None:
            return
        address, params = parsed
        if params:
            await self.push(f"555 5.5.4 RCPT TO parameter {params[0]} not recognized or not implemented")
            return
        await self.reply_soon(await self.agent.handle_RCPT(self, self.session, env, address, params))

    # ------------------------------------------------------------------ DATA
    def data_replies(self, replies: list[str]) -> str:
        """LMTP: one reply per recipient; SMTP overrides this with one reply for all."""
        return "\r\n".join(replies)

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        env = self.envelope
        assert env is not None
        if not env.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if self.agent.closing:
            await self.push(REPLY_SHUTDOWN)
            self.transport.close()
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._reset_timeout(self.listener.settings.data_timeout)
        try:
            content, problem = await self._read_data()
        except _Abort as e:
            await self.push(str(e))
            self.transport.close()
            return
        recipients: list[Recipient] = env.recipients  # type: ignore[attr-defined]
        if problem is None:
            max_line = self.listener.settings.max_line_length
            if len(content) > 256 * 1024:  # scanning a big message would stall other sessions
                problem = await asyncio.to_thread(content_problem, content, max_line)
            else:
                problem = content_problem(content, max_line)
        if problem is not None:
            replies = self.agent.reject_all(recipients, problem)
        else:
            self._busy = True
            try:
                trace = self.agent.trace_headers(self.session, env, self.received_with())
                replies = await self.agent.deliver(trace, content, recipients)
            finally:
                self._busy = False
        self._set_post_data_state()
        self._reset_timeout()
        await self.push(self.data_replies(replies))
        if self._close_after:
            await self.push(REPLY_SHUTDOWN)
            self.transport.close()

    def received_with(self) -> str:
        return self.with_proto

    async def _read_data(self) -> tuple[bytes, str | None]:
        content = await read_data(self._reader, self.listener.settings.max_message_bytes)
        if content is None:
            return b"", f"552 5.3.4 Message too big (limit {self.listener.settings.max_message_bytes} bytes)"
        return content, None


async def read_data(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read DATA up to CRLF.CRLF and return it dot-unstuffed, leaving what follows in the reader;
    None when it is over `limit` bytes (the rest is read and dropped so the session stays in
    step). A message that never ends raises _Abort; a client that leaves, ConnectionResetError."""
    # One readuntil() scans the whole buffer for LF.CRLF at C speed. StreamReader's limit is
    # lifted to the message limit for this, and restored for command lines.
    saved_limit = reader._limit  # type: ignore[attr-defined]
    reader._limit = limit + 5  # type: ignore[attr-defined]
    buf = bytearray(b"\r\n")  # the data starts at a line start
    over = False
    total = 0
    try:
        while not buf.endswith(b"\r\n.\r\n"):
            # readuntil() cannot see a terminator that began in bytes already taken: when buf
            # ends with the start of one ("\n", "\n.", "\n.\r"), take just the bytes that
            # complete or refute it.
            k = 3 if buf.endswith(b"\n.\r") else 2 if buf.endswith(b"\n.") else 1 if buf.endswith(b"\n") else 0
            try:
                piece = await reader.readexactly(4 - k) if k else await reader.readuntil(b"\n.\r\n")
            except asyncio.LimitOverrunError as e:
                piece = await reader.read(e.consumed)
                over = True
            except asyncio.IncompleteReadError as e:
                raise ConnectionResetError("client closed the connection during DATA") from e
            total += len(piece)
            buf += piece
            if over or len(buf) > limit + 5:
                over = True
                del buf[:-5]  # keep only what the terminator check needs
                if total > 2 * limit + 1024 * 1024:
                    # A message that never ends: stop reading and hang up.
                    raise _Abort(f"552 5.3.4 Message too big (limit {limit} bytes), closing connection")
    finally:
        reader._limit = saved_limit  # type: ignore[attr-defined]
    if over:
        return None
    return unstuff(bytes(buf[2:-3]))


def _counted(method: Callable, counter: Any) -> Callable:
    async def run(arg: Any) -> Any:
        counter.inc()
        return await method(arg)

    return run


# ---------------------------------------------------------------------------- listener
class Listener:
    """A running LMTP or SMTP listener: `.port` (TCP), `.unix_path`, `async close()`."""

    def __init__(self, store: NodeStore, settings: DeliverySettings, protocol: str, session_cls: type[DeliverySession]):
        self.store = store
        self.settings = settings
        self.protocol = protocol
        self.session_cls = session_cls
        self.agent = DeliveryAgent(store, settings, protocol)
        self.sessions: set[DeliverySession] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.port = 0
        self.unix_path: str | None = None
        self.session_kwargs: dict[str, Any] = {}
        self.connections = CONNECTIONS.labels(protocol)
        self.refused = REFUSED.labels(protocol)
        self.open = OPEN.labels(protocol)
        self._command_counters: dict[str, Any] = {}
        self._cleanup: list[Callable[[], None]] = []

    def command_counters(self, name: str) -> Any:
        c = self._command_counters.get(name)
        if c is None:
            c = self._command_counters[name] = COMMANDS.labels(self.protocol, name)
        return c

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
        log.info("%s listening on %s:%d%s", self.protocol, s.host, self.port, f" and {unix_socket}" if unix_socket else "")
        return self

    async def close(self) -> None:
        """Stop listening; idle sessions get 421 at once, deliveries being committed finish and
        get their reply first (nothing acknowledged is lost, nothing durable goes unanswered)."""
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
        for fn in self._cleanup:
            fn()
