"""Mailbox commands: LIST/LSUB (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN), STATUS,
CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, quota, APPEND, SELECT/EXAMINE."""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from mailpair.mime.binary import encode_nul_parts
from mailpair.protocols.imap import catenate, reads, wire
from mailpair.protocols.imap.args import Args, Atom, Binary, Literal, ParseError, as_astring, as_number
from mailpair.protocols.imap.selected import Selected
from mailpair.protocols.imap.session import AUTH, Bad, No, Session, command
from mailpair.store import NoSuchMailbox
from mailpair.store.errors import StoreError
from mailpair.store.names import DELIMITER

_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "SIZE", "HIGHESTMODSEQ", "DELETED")
_SPECIAL_USES = {"\\DRAFTS", "\\SENT", "\\TRASH", "\\JUNK", "\\ARCHIVE", "\\ALL", "\\FLAGGED"}
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DATE_TIME = re.compile(r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")


def _pattern_regex(ref: str, pattern: str) -> re.Pattern:
    full = pattern if (not ref or pattern.startswith(DELIMITER)) else ref + pattern
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] == DELIMITER):
        full = "INBOX" + full[5:]
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def _match_name(rx: re.Pattern, name: str) -> bool:
    if rx.fullmatch(name):
        return True
    if name == "INBOX" or name.startswith("INBOX" + DELIMITER):
        # INBOX is case-insensitive (RFC 9051 5.1): "inbox*" or "Inb%" must still find it.
        return re.fullmatch(rx.pattern, name, re.S | re.I) is not None
    return False


async def _status_line(s: Session, name: str, items: list[str]) -> bytes | None:
    st = await s.db.read(reads.status, s.user, name, s.server.recent.claimed)
    if st is None:
        return None
    vals = []
    for it in items:
        if it == "APPENDLIMIT":
            vals.append(b"APPENDLIMIT %d" % s.settings.literal_limit())
        else:
            vals.append(it.encode() + b" %d" % st[it])
    return b"* STATUS " + s.mailbox_out(name) + b" (" + b" ".join(vals) + b")\r\n"


def _status_items(lst: list) -> list[str]:
    items = []
    for v in lst:
        if not isinstance(v, Atom) or v.upper() not in (*_STATUS_ITEMS, "APPENDLIMIT"):
            raise ParseError(f"unknown status item {str(v)[:30]}")
        items.append(v.upper())
    if not items:
        raise ParseError("STATUS needs at least one item")
    return items


@command("LIST", AUTH)
async def list_(s: Session, tag: bytes, a: Args) -> bytes:
    select_opts: set[str] = set()
    if isinstance(a.peek(), list):
        select_opts = {str(x).upper() for x in a.list()}
        if not select_opts <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise Bad("unknown LIST selection option")
        # RFC 5258 3: RECURSIVEMATCH must come with an option it can recurse on; REMOTE alone
        # selects nothing (it only widens the set), so it does not count.
        if "RECURSIVEMATCH" in select_opts and not select_opts - {"RECURSIVEMATCH", "REMOTE"}:
            raise Bad("RECURSIVEMATCH needs another selection option")
    ref = s.mailbox_in(a.astring("reference"))
    pat = a.next("mailbox pattern")
    patterns = []
    for p in pat if isinstance(pat, list) else [pat]:
        try:
            patterns.append(s.mailbox_in(as_astring(p, "pattern")))
        except No:
            pass  # a pattern no mailbox name can match (bad modified UTF-7) matches nothing
    return_opts: set[str] = set()
    status_items: list[str] = []
    if a.more():
        if a.atom("RETURN").upper() != "RETURN":
            raise Bad("expected RETURN")
        opts = a.list("return options")
        i = 0
        while i < len(opts):
            o = str(opts[i]).upper()
            if o == "STATUS":
                if i + 1 >= len(opts) or not isinstance(opts[i + 1], list):
                    raise Bad("RETURN (STATUS (items))")
                status_items = _status_items(opts[i + 1])
                i += 1
            elif o not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise Bad(f"unknown return option {o[:20]}")
            return_opts.add(o)
            i += 1
    a.end()
    if not patterns:
        return b"OK LIST completed (no mailbox name can match)"
    if patterns == [""]:
        s.send(b'* LIST (\\Noselect) "/" ""\r\n')
        return b"OK LIST completed"
    boxes, subs = await s.db.read(reads.mailboxes, s.user)
    names = [b[0] for b in boxes]
    uses = {b[0]: b[1] for b in boxes}
    regexes = [_pattern_regex(ref, p) for p in patterns]
    # Every ancestor of a mailbox has children; an ancestor that does not exist (its mailbox was
    # deleted, its children kept) is listed as \Noselect, as RFC 3501 6.3.4 describes.
    parents = {name.rsplit(DELIMITER, k)[0] for name in names for k in range(1, name.count(DELIMITER) + 1)}
    phantoms = parents - set(uses) if not select_opts - {"REMOTE"} else set()
    # What the selection options pick (RFC 5258 3): subscribed and/or special-use mailboxes.
    picked = set(names) | phantoms
    if "SUBSCRIBED" in select_opts:
        picked = set(subs)
    if "SPECIAL-USE" in select_opts:
        picked = {n for n in picked if uses.get(n)}
    matching = {n for n in picked if any(_match_name(rx, n) for rx in regexes)}
    # RECURSIVEMATCH: a mailbox whose descendant was picked is listed with CHILDINFO, even when
    # it is not picked itself, unless every such descendant is listed anyway (RFC 5258 3.5's
    # SHOULD: CHILDINFO only for a picked child that is not also being returned).
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in select_opts:
        for n in picked - matching:
            parts = n.split(DELIMITER)
            for k in range(1, len(parts)):
                anc = DELIMITER.join(parts[:k])
                if any(_match_name(rx, anc) for rx in regexes):
                    childinfo.add(anc)
    criteria = [o for o in ("SUBSCRIBED",) if o in select_opts]
    for name in sorted(matching | childinfo):
        exists = name in uses
        attrs = []
        if name in phantoms:
            attrs += ["\\Noselect", "\\HasChildren"]
        elif not exists:
            attrs.append("\\NonExistent")
        else:
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
            if uses.get(name):
                attrs.append(uses[name])
        if name in subs and ("SUBSCRIBED" in select_opts or "SUBSCRIBED" in return_opts):
            attrs.append("\\Subscribed")
        extended = b""
        if name in childinfo and criteria:
            extended = b' ("CHILDINFO" (' + b" ".join(b'"%s"' % c.encode() for c in criteria) + b"))"
        s.send(b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + s.mailbox_out(name) + extended + b"\r\n")
        if status_items and exists:
            line = await _status_line(s, name, status_items)
            if line:
                s.send(line)
    return b"OK LIST completed"


@command("LSUB", AUTH)
async def lsub(s: Session, tag: bytes, a: Args) -> bytes:
    ref = s.mailbox_in(a.astring("reference"))
    raw_pattern = a.astring("pattern")
    a.end()
    try:
        pattern = s.mailbox_in(raw_pattern)
    except No:  # no mailbox name can match it (bad modified UTF-7): nothing to list
        return b"OK LSUB completed (no mailbox name can match)"
    boxes, subs = await s.db.read(reads.mailboxes, s.user)
    existing = {b[0] for b in boxes}
    rx = _pattern_regex(ref, pattern)
    listed = {name for name in subs if _match_name(rx, name)}
    # RFC 3501 6.3.9: with "%", a subscribed "foo/bar" makes an unsubscribed "foo" appear,
    # flagged \Noselect; only for a parent whose subscribed child is not listed itself.
    parents = set()
    for name in subs - listed:
        parts = name.split(DELIMITER)
        for k in range(1, len(parts)):
            anc = DELIMITER.join(parts[:k])
            if anc not in subs and _match_name(rx, anc):
                parents.add(anc)
    for name in sorted(listed | parents):
        attrs = b"" if name in existing and name not in parents else b"\\Noselect"
        s.send(b"* LSUB (" + attrs + b') "/" ' + s.mailbox_out(name) + b"\r\n")
    return b"OK LSUB completed"


@command("STATUS", AUTH)
async def status(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    items = _status_items(a.list("status items"))
    a.end()
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()  # RFC 7162 3.1: STATUS (HIGHESTMODSEQ) is CONDSTORE-enabling
    line = await _status_line(s, name, items)
    if line is None:
        raise No(f"no such mailbox: {name}", b"NONEXISTENT")
    s.send(line)
    return b"OK STATUS completed"


@command("CREATE", AUTH)
async def create(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox")).rstrip(DELIMITER)
    use = None
    if a.more():
        opts = a.list("create parameters")
        if len(opts) != 2 or str(opts[0]).upper() != "USE" or not isinstance(opts[1], list) or len(opts[1]) > 1:
            raise Bad("expected (USE (\\special-use))")
        if opts[1]:
            use = str(opts[1][0])
            if use.upper() not in _SPECIAL_USES:
                raise No(f"unknown special use {use[:20]}", b"USEATTR")
            use = "\\" + use[1:].capitalize()
    a.end()
    if not name:
        raise Bad("empty mailbox name")
    await s.db.acommit("mailbox_create", account=s.user, name=name, special_use=use)
    return b"OK CREATE completed"


@command("DELETE", AUTH)
async def delete(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    a.end()
    await s.db.acommit("mailbox_delete", account=s.user, name=name)
    return b"OK DELETE completed"


@command("RENAME", AUTH)
async def rename(s: Session, tag: bytes, a: Args) -> bytes:
    old = s.mailbox_in(a.astring("mailbox"))
    new = s.mailbox_in(a.astring("new name")).rstrip(DELIMITER)
    a.end()
    await s.db.acommit("mailbox_rename", account=s.user, old=old, new=new)
    if s.sel is not None:
        row = await s.db.read(reads.snapshot, s.sel.box_id)
        if row[0] is not None:
            s.sel.name = row[0][1]
    return b"OK RENAME completed"


@command("SUBSCRIBE", AUTH)
async def subscribe(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    a.end()
    await s.db.acommit("subscribe", account=s.user, name=name, on=True)
    return b"OK SUBSCRIBE completed"


@command("UNSUBSCRIBE", AUTH)
async def unsubscribe(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    a.end()
    await s.db.acommit("subscribe", account=s.user, name=name, on=False)
    return b"OK UNSUBSCRIBE completed"


# ---------------------------------------------------------------------------- quota
async def _send_quota(s: Session) -> bool:
    row = await s.db.read(reads.account, s.user)
    if row is None or not row[1]:
        return False
    used_kb = (row[2] + 1023) // 1024
    s.send(b'* QUOTA "" (STORAGE %d %d)\r\n' % (used_kb, row[1] // 1024))
    return True


@command("GETQUOTAROOT", AUTH)
async def getquotaroot(s: Session, tag: bytes, a: Args) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    a.end()
    if await s.db.read(reads.mailbox, s.user, name) is None:
        raise No(f"no such mailbox: {name}", b"NONEXISTENT")
    row = await s.db.read(reads.account, s.user)
    if row is None or not row[1]:
        s.send(b"* QUOTAROOT " + s.mailbox_out(name) + b"\r\n")
    else:
        s.send(b"* QUOTAROOT " + s.mailbox_out(name) + b' ""\r\n')
        await _send_quota(s)
    return b"OK GETQUOTAROOT completed"


@command("GETQUOTA", AUTH)
async def getquota(s: Session, tag: bytes, a: Args) -> bytes:
    root = a.astring("quota root")
    a.end()
    if root != b"" or not await _send_quota(s):
        raise No("no such quota root")
    return b"OK GETQUOTA completed"


@command("SETQUOTA", AUTH)
async def setquota(s: Session, tag: bytes, a: Args) -> bytes:
    raise No("quotas are set by the administrator (mailpair user quota)", b"NOPERM")


# ---------------------------------------------------------------------------- APPEND
def parse_date_time(v: bytes) -> int:
    m = _DATE_TIME.match(v.decode("ascii", "replace"))
    if not m or m.group(2).upper() not in _MONTHS:
        raise Bad('bad date-time (use "28-Nov-2026 15:18:37 +0000")')
    d, mon, y, hh, mm, ss, sign, zh, zm = m.groups()
    try:
        t = calendar.timegm((int(y), _MONTHS[mon.upper()], int(d), int(hh), int(mm), int(ss)))
    except ValueError:
        raise Bad("bad date-time") from None
    offset = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == "+" else -1)
    return (t - offset) * 1_000_000


@dataclass(slots=True)
class _Message:
    flags: list[str]
    date_us: int | None
    raw: bytes
    binary: bool


def _append_flags(v: list) -> list[str]:
    flags = []
    for f in v:
        if not isinstance(f, Atom):
            raise Bad("flags are atoms")
        if f.upper() != "\\RECENT":
            flags.append(str(f))
    return flags


async def _next_message(s: Session, a: Args) -> _Message:
    """One `[flags] [date-time] (literal | UTF8 (literal8) | CATENATE (parts))` of APPEND."""
    flags = _append_flags(a.list()) if isinstance(a.peek(), list) else []
    date_us = None
    nxt = a.next("message literal")
    if isinstance(nxt, bytes) and not isinstance(nxt, Literal):  # a quoted date-time
        date_us = parse_date_time(nxt)
        nxt = a.next("message literal")
    if isinstance(nxt, Atom) and nxt.upper() == "UTF8":  # RFC 6855: APPEND ... UTF8 (~{n}...)
        inner = a.list("UTF8 message")
        if len(inner) != 1 or not isinstance(inner[0], bytes):
            raise Bad("UTF8 needs one literal8 in parentheses")
        nxt = inner[0]
    elif isinstance(nxt, Atom) and nxt.upper() == "CATENATE":  # RFC 4469
        raw = await catenate.assemble(s, a.list("CATENATE parts"))
        return _Message(flags, date_us, raw, False)
    if not isinstance(nxt, Literal):
        raise Bad("the message must be a literal")
    return _Message(flags, date_us, bytes(nxt), isinstance(nxt, Binary))


@command("APPEND", AUTH)
async def append(s: Session, tag: bytes, a: Args) -> bytes:
    """APPEND, with MULTIAPPEND (RFC 3502: several messages, all or none) and CATENATE (RFC 4469:
    a message assembled from literals and parts of stored messages)."""
    name = s.mailbox_in(a.astring("mailbox"))
    messages = [await _next_message(s, a)]
    while a.more():
        messages.append(await _next_message(s, a))
    limit = s.settings.literal_limit()
    prepared = []
    for m in messages:  # every message is checked before any is stored
        if not m.raw:
            raise No("empty message")
        raw = encode_nul_parts(m.raw) if m.binary else m.raw  # RFC 3516 4.3: binary parts in base64
        prepared.append(await s.server.store.preparer.prepare(raw, limit))
    now = time.time_ns() // 1000
    done: list[int] = []
    uidvalidity = 0
    try:
        for m, p in zip(messages, prepared, strict=True):
            res = await s.db.acommit("append", account=s.user, mailbox=name, date=m.date_us or now, flags=m.flags, **p)
            done.append(res["uid"])
            uidvalidity = res["uidvalidity"]
            if s.sel is not None and res["mailbox_id"] == s.sel.box_id:
                s.dirty = True
    except StoreError as e:
        if done:  # RFC 3502: none of them, if not all (each append is its own record)
            await s.db.acommit("store_flags", account=s.user, mailbox=name, uids=done, flags=["\\Deleted"], mode="add")
            await s.db.acommit("expunge", account=s.user, mailbox=name, uids=done)
        if isinstance(e, NoSuchMailbox):
            raise No(f"no such mailbox: {name}", b"TRYCREATE") from None
        raise
    return b"OK [APPENDUID %d %s] APPEND completed" % (uidvalidity, wire.seq_set(done) if len(done) > 1 else b"%d" % done[0])


# ---------------------------------------------------------------------------- SELECT
async def _select(s: Session, a: Args, readonly: bool) -> bytes:
    name = s.mailbox_in(a.astring("mailbox"))
    qresync_args = None
    if a.more():
        params = a.list("select parameters")
        i = 0
        while i < len(params):
            p = str(params[i]).upper() if isinstance(params[i], Atom) else ""
            if p == "CONDSTORE":
                s.condstore = True  # SELECT reports HIGHESTMODSEQ itself
            elif p == "QRESYNC":
                if not s.qresync:
                    raise Bad("ENABLE QRESYNC first")
                if i + 1 >= len(params) or not isinstance(params[i + 1], list):
                    raise Bad("QRESYNC needs (uidvalidity modseq [known-uids])")
                qresync_args = params[i + 1]
                i += 1
            else:
                raise Bad(f"unknown select parameter {str(params[i])[:20]}")
            i += 1
    a.end()
    if s.sel is not None:
        s.sel = None
        s.state = "auth"
        if s.qresync or s.rev2:
            s.send(b"* OK [CLOSED] previous mailbox closed\r\n")
    row = await s.db.read(reads.mailbox, s.user, name)
    if row is None:
        raise No(f"no such mailbox: {name}", b"NONEXISTENT")
    row, msgs = await s.db.read(reads.snapshot, row[0])
    if row is None:
        raise No(f"no such mailbox: {name}", b"NONEXISTENT")
    # EXAMINE counts \Recent as SELECT and STATUS do, but claims nothing: the messages stay
    # recent for the next session that selects the mailbox (RFC 3501 6.3.2, 2.3.2).
    uids = [m[0] for m in msgs]
    recent = s.server.recent.peek(row[0], uids) if readonly else s.server.recent.claim(row[0], uids)
    sel = Selected(row, msgs, readonly, recent)
    keywords, first_unseen = reads.select_facts(msgs)
    sel.keywords = set(keywords)
    s.send(b"".join(sel.flags_lines()))
    s.send(b"* %d EXISTS\r\n" % len(msgs))
    if not s.rev2:
        s.send(b"* %d RECENT\r\n" % len(recent))
        if first_unseen:
            s.send(b"* OK [UNSEEN %d] first unseen message\r\n" % first_unseen)
    s.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % sel.uidvalidity)
    s.send(b"* OK [UIDNEXT %d] predicted next UID\r\n" % sel.uidnext)
    s.send(b"* OK [HIGHESTMODSEQ %d] highest modseq\r\n" % sel.highestmodseq)
    if s.rev2:
        s.send(b'* LIST () "/" ' + s.mailbox_out(sel.name) + b"\r\n")
    if qresync_args is not None:
        await _qresync(s, sel, qresync_args)
    s.sel = sel
    s.state = "selected"
    s.dirty = True  # catch anything committed between the snapshot and now
    return b"OK [READ-ONLY] EXAMINE completed" if readonly else b"OK [READ-WRITE] SELECT completed"


async def _qresync(s: Session, sel: Selected, args: list) -> None:
    from mailpair.protocols.imap import seqset

    if len(args) < 2:
        raise Bad("QRESYNC needs uidvalidity and modseq")
    uv = as_number(args[0], "uidvalidity")
    since = as_number(args[1], "modseq")
    known = None
    if len(args) > 2 and isinstance(args[2], Atom):
        known = seqset.parse(args[2])
        if known == "$":
            raise Bad("$ is not allowed here")
    if uv != sel.uidvalidity:
        return
    gone = await s.db.read(reads.expunged_since, sel.box_id, since)
    if known is not None:
        gone = [u for u in gone if seqset.contains(known, u, 2**32)]
    if gone:
        s.send(b"* VANISHED (EARLIER) " + wire.seq_set(gone) + b"\r\n")
    for i, uid in enumerate(sel.uids):
        if sel.modseqs[uid] > since and (known is None or seqset.contains(known, uid, 2**32)):
            s.send(b"* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))\r\n" % (i + 1, uid, sel.flags[uid].encode(), sel.modseqs[uid]))


@command("SELECT", AUTH)
async def select(s: Session, tag: bytes, a: Args) -> bytes:
    return await _select(s, a, readonly=False)


@command("EXAMINE", AUTH)
async def examine(s: Session, tag: bytes, a: Args) -> bytes:
    return await _select(s, a, readonly=True)
