"""Commands valid in any state, and logging in: CAPABILITY, NOOP, LOGOUT, ID, ENABLE, STARTTLS,
LOGIN, AUTHENTICATE, NAMESPACE.

Every password check waits out the login penalty first (guard.py: per address and per user
name, across connections, parallel sessions and successes); a failed one is counted, logged and
answered after a short extra delay."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import secrets
import zlib

from mailpair.protocols.imap import reads
from mailpair.protocols.imap.args import Args
from mailpair.protocols.imap.session import ANY, AUTH, NOTAUTH, Answered, Bad, Closed, No, Session, command
from mailpair.store import hash_password, verify_password

log = logging.getLogger("mailpair.imap")

_ENABLE_KNOWN = {"CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2"}


@command("CAPABILITY", ANY)
async def capability(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.send(b"* CAPABILITY " + b" ".join(s.capabilities()) + b"\r\n")
    return b"OK CAPABILITY completed"


@command("NOOP", ANY)
async def noop(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    # NOOP is how clients poll: look even if no notification came yet, unless nothing at all was
    # committed since this session last looked (then a look would find nothing, and costs a hop
    # to the reader thread for every poll of every session)
    if s.sel is not None and s.db is not None and s.db.applied_lsn != s.sel.synced_lsn:
        s.dirty = True
    return b"OK NOOP completed"


@command("CHECK", frozenset({"selected"}))
async def check(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.dirty = True
    return b"OK CHECK completed"


@command("LOGOUT", ANY)
async def logout(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.send(b"* BYE logging out\r\n")
    s.state = "logout"
    return b"OK LOGOUT completed"


@command("ID", ANY)
async def id_(s: Session, tag: bytes, a: Args) -> bytes:
    a.next("client ID list or NIL")
    a.end()
    s.send(b'* ID ("name" "mailpair" "vendor" "mailpair")\r\n')
    return b"OK ID completed"


@command("ENABLE", AUTH)
async def enable(s: Session, tag: bytes, a: Args) -> bytes:
    if not a.more():
        raise Bad("ENABLE needs capability names")
    newly = []
    while a.more():
        cap = a.atom("capability").upper()
        if cap in _ENABLE_KNOWN and cap not in s.enabled:
            s.enabled.add(cap)
            newly.append(cap)
            if cap == "QRESYNC" and "CONDSTORE" not in s.enabled:
                s.enabled.add("CONDSTORE")
                newly.append("CONDSTORE")
    if "CONDSTORE" in s.enabled:
        s.enable_condstore()
    s.send(b"* ENABLED" + b"".join(b" " + c.encode() for c in newly) + b"\r\n")
    return b"OK ENABLE completed"


@command("NAMESPACE", AUTH)
async def namespace(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return b"OK NAMESPACE completed"


@command("STARTTLS", NOTAUTH)
async def starttls(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    if s.server.ssl_context is None:
        raise No("TLS is not configured on this listener")
    if s.tls:
        raise Bad("TLS is already active")
    s.send(tag + b" OK Begin TLS negotiation now\r\n")
    await s.flush()
    # Anything the client pipelined after STARTTLS came in the clear: drop it (RFC 9051 6.2.1).
    s.framer.buf.clear()
    try:
        await asyncio.wait_for(s.transport.start_tls(s.server.ssl_context), s.settings.command_timeout)
    except (OSError, TimeoutError) as e:
        raise Closed(f"TLS handshake failed: {e}") from None
    raise Answered


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


async def _find_account(s: Session, user: str):
    return await s.server.store.find_account(user, reads.account)


async def _authenticate_user(s: Session, user: str, password: str) -> bytes:
    changes = s.server.credential_changes.get(user, 0)
    db, row = await _find_account(s, user)
    # The login penalty (guard.py) is waited out before the password is checked, whatever the
    # answer will be: a right password found by guessing answers no sooner than a wrong one.
    penalty = s.server.penalty
    if penalty.would_wait(s.address, user, row is not None):
        # A client that hangs up while it waits gets no check at all (and frees its slot).
        attempt = await s.unless_hangup(penalty.acquire(s.address, user, row is not None))
    else:
        attempt = await penalty.acquire(s.address, user, row is not None)
    try:
        if attempt.waited:
            log.info("IMAP login for %s from %s waited %.1f s (recent failed logins)", user, s.peer, attempt.waited)
            db, row = await _find_account(s, user)  # the account may have changed meanwhile
        ok = False
        if row is not None and password:
            # A returning user within the cache's time: a keyed hash instead of scrypt. row[0] is
            # the account's hash as the database holds it now, so a changed password misses.
            ok = s.server.auth_cache.check(user, password, row[0])
            if not ok:
                ok = await asyncio.to_thread(verify_password, password, row[0])
                if ok:
                    s.server.auth_cache.remember(user, password, row[0])
        else:
            # Same work for an unknown user, so the reply's timing does not tell which names exist.
            await asyncio.to_thread(lambda: verify_password(password or "-", _dummy_hash()))
        if not ok:
            recent = attempt.failed()
            log.warning("IMAP login failed for %s from %s (%d recent failures)", user, s.peer, recent)
            # Still held, so parallel attempts on the same keys keep waiting behind this one.
            await asyncio.sleep(s.settings.login_delay * 0.5)
            raise No("invalid user name or password", b"AUTHENTICATIONFAILED")
    finally:
        attempt.release()
    if s.server.credential_changes.get(user, 0) != changes:
        # The password changed (or the account went) while this one was checked: the sessions
        # it ended would otherwise miss this one.
        raise No("the account changed during login; try again", b"UNAVAILABLE")
    limit = s.settings.max_connections_per_user
    if s.server.user_connections.get(user, 0) >= limit:
        raise No(f"too many connections for {user} (limit {limit})", b"LIMIT")
    s.server.user_connections[user] = s.server.user_connections.get(user, 0) + 1
    s.logged_in(user, db)
    s.server.watch(db)
    return b"OK [CAPABILITY " + b" ".join(s.capabilities()) + b"] logged in"


def _check_plaintext(s: Session) -> None:
    if not s.tls and not s.settings.plaintext_allowed():
        raise No("log in over TLS (STARTTLS) first", b"PRIVACYREQUIRED")


@command("LOGIN", NOTAUTH)
async def login(s: Session, tag: bytes, a: Args) -> bytes:
    user = a.astring("user name").decode("utf-8", "replace")
    password = a.astring("password").decode("utf-8", "replace")
    a.end()
    _check_plaintext(s)
    return await _authenticate_user(s, user, password)


@command("AUTHENTICATE", NOTAUTH)
async def authenticate(s: Session, tag: bytes, a: Args) -> bytes:
    mech = a.atom("mechanism").upper()
    initial = a.astring("initial response") if a.more() else None
    a.end()
    if mech != "PLAIN":
        raise No(f"unsupported mechanism {mech[:20]}; use PLAIN", b"CANNOT")
    _check_plaintext(s)
    if initial is None:
        s.send(b"+ \r\n")
        await s.flush()
        initial = await s.read_line()
        if initial.strip() == b"*":
            raise Bad("authentication cancelled")
    elif initial == b"=":
        initial = b""
    try:
        decoded = base64.b64decode(initial.strip(), validate=True)
        authz, authc, password = decoded.split(b"\0")
        user = authc.decode("utf-8")
        pw = password.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Bad("malformed SASL PLAIN response") from None
    if authz and authz != authc:
        raise No("acting as another user is not allowed", b"AUTHORIZATIONFAILED")
    return await _authenticate_user(s, user, pw)


@command("COMPRESS", AUTH)
async def compress(s: Session, tag: bytes, a: Args) -> bytes:
    mech = a.atom("mechanism").upper()
    a.end()
    if mech != "DEFLATE":
        raise Bad("only COMPRESS DEFLATE is supported")
    if s.deflater is not None:
        raise No("compression is already on", b"COMPRESSIONACTIVE")
    s.send(tag + b" OK DEFLATE active\r\n")
    await s.flush()
    # RFC 4978: raw deflate both ways from the byte after the OK line.
    s.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    s.inflater = zlib.decompressobj(-15)
    rest = bytes(s.framer.buf)  # anything pipelined after COMPRESS is already compressed
    s.framer.buf.clear()
    if rest:
        s.feed(rest)
    raise Answered
