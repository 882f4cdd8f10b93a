"""SORT and THREAD (RFC 5256): ordering search results by message data, and grouping them into
threads (ORDEREDSUBJECT, REFERENCES). Runs on the database's reader thread, like SEARCH."""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils
import re
import sqlite3
from dataclasses import dataclass, field

from msgpack import unpackb

from mailpair.protocols.imap import search
from mailpair.protocols.imap.args import Atom, ParseError

KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_LEADER = re.compile(r"^(?:\s*(?:re|fwd?)\s*(?:\[[^\]]*\])?\s*:|\s*\[[^\]]*\])\s*", re.I)
_TRAILER = re.compile(r"(?:\s*\(fwd\))+\s*$", re.I)
_MSGID = re.compile(rb"<[^<>\s]+>")


def parse_criteria(v) -> list[tuple[str, bool]]:
    if not isinstance(v, list) or not v:
        raise ParseError("SORT needs a parenthesised list of sort keys")
    out = []
    reverse = False
    for k in v:
        if not isinstance(k, Atom):
            raise ParseError("sort keys are atoms")
        u = k.upper()
        if u == "REVERSE":
            reverse = True
            continue
        if u not in KEYS:
            raise ParseError(f"unknown sort key {u[:20]}")
        out.append((u, reverse))
        reverse = False
    if reverse or not out:
        raise ParseError("REVERSE must be followed by a sort key")
    return out


def _decode(b: bytes | None) -> str:
    if not b:
        return ""
    try:
        parts = email.header.decode_header(b.decode("utf-8", "replace"))
        out = []
        for text, cs in parts:
            if isinstance(text, bytes):
                try:
                    out.append(text.decode(cs or "utf-8", "replace"))
                except LookupError:
                    out.append(text.decode("utf-8", "replace"))
            else:
                out.append(text)
        return "".join(out)
    except Exception:
        return b.decode("utf-8", "replace")


def base_subject(raw: bytes | None) -> str:
    """RFC 5256 section 2.1, for i;unicode-casemap comparison."""
    s = " ".join(_decode(raw).split())
    while True:
        before = s
        s = _TRAILER.sub("", s)
        while True:
            t = _LEADER.sub("", s, count=1)
            if t == s or not t:
                break
            s = t
        if s.lower().startswith("[fwd:") and s.endswith("]"):
            s = s[5:-1].strip()
        if s == before:
            return s.casefold()


def _sent(env: list, idate_us: int) -> float:
    if env and env[0]:
        try:
            return email.utils.parsedate_to_datetime(env[0].decode("utf-8", "replace")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return idate_us / 1e6


def _addr_key(addrs, display: bool) -> str:
    if not addrs:
        return ""
    name, _adl, mbox, host = addrs[0]
    if display and name:
        return _decode(name).casefold()
    if display:
        return ((mbox or b"") + b"@" + (host or b"")).decode("utf-8", "replace").casefold()
    return (mbox or b"").decode("utf-8", "replace").casefold()


@dataclass(slots=True)
class Item:
    msn: int
    uid: int
    idate: int
    size: int
    env: list
    raw_head: bytes | None = None
    sent: float = 0.0
    children: list = field(default_factory=list)


def _items(conn: sqlite3.Connection, box_id: int, found: list[tuple[int, int, int]], need_head: bool) -> list[Item]:
    by_uid = {uid: msn for msn, uid, _ in found}
    out = []
    cols = "m.uid, m.internal_date_us, m.size, b.envelope" + (", substr(b.raw, 1, 65536)" if need_head else ", NULL")
    for uid, idate, size, env, head in conn.execute(
        f"SELECT {cols} FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id=? ORDER BY m.uid",
        (box_id,),
    ):
        msn = by_uid.get(uid)
        if msn is None:
            continue
        e = unpackb(env)
        it = Item(msn, uid, idate, size, e, head)
        it.sent = _sent(e, idate)
        out.append(it)
    return out


def run_sort(
    conn: sqlite3.Connection,
    box_id: int,
    uids: list[int],
    q: search.Query,
    recent: set[int],
    saved: set[int] | None,
    criteria: list[tuple[str, bool]],
) -> list[tuple[int, int]]:
    found = search.run(conn, box_id, uids, q, recent, saved)
    items = _items(conn, box_id, found, False)
    items.sort(key=lambda i: i.msn)
    for key, reverse in reversed(criteria):  # stable sorts, last key first
        items.sort(key=lambda i, k=key: _sort_value(i, k), reverse=reverse)
    return [(i.msn, i.uid) for i in items]


def _sort_value(i: Item, key: str):
    e = i.env
    if key == "ARRIVAL":
        return i.idate
    if key == "DATE":
        return i.sent
    if key == "SIZE":
        return i.size
    if key == "SUBJECT":
        return base_subject(e[1])
    if key in ("FROM", "DISPLAYFROM"):
        return _addr_key(e[2], key == "DISPLAYFROM")
    if key in ("TO", "DISPLAYTO"):
        return _addr_key(e[5], key == "DISPLAYTO")
    if key == "CC":
        return _addr_key(e[6], False)
    return 0


def run_thread(
    conn: sqlite3.Connection,
    box_id: int,
    uids: list[int],
    q: search.Query,
    recent: set[int],
    saved: set[int] | None,
    algorithm: str,
    use_uid: bool,
) -> bytes:
    found = search.run(conn, box_id, uids, q, recent, saved)
    items = _items(conn, box_id, found, algorithm == "REFERENCES")
    ident = (lambda i: i.uid) if use_uid else (lambda i: i.msn)
    if algorithm == "ORDEREDSUBJECT":
        groups: dict[str, list[Item]] = {}
        for it in sorted(items, key=lambda i: (i.sent, i.msn)):
            groups.setdefault(base_subject(it.env[1]), []).append(it)
        out = []
        for g in sorted(groups.values(), key=lambda g: (g[0].sent, g[0].msn)):
            if len(g) == 1:
                out.append(b"(%d)" % ident(g[0]))
            elif len(g) == 2:
                out.append(b"(%d %d)" % (ident(g[0]), ident(g[1])))
            else:
                out.append(b"(%d " % ident(g[0]) + b"".join(b"(%d)" % ident(c) for c in g[1:]) + b")")
        return b"".join(out)
    return _references(items, ident)


def _references(items: list[Item], ident) -> bytes:
    """RFC 5256 REFERENCES, steps 1-4 (parent links from References / In-Reply-To, roots ordered
    by date, children by date); messages whose parents are missing start their own thread."""
    by_id: dict[bytes, Item] = {}
    refs: dict[int, list[bytes]] = {}
    for it in items:
        head = _HEADERS.parsebytes(it.raw_head or b"")
        mid = _MSGID.findall(str(head.get("Message-ID", "")).encode("utf-8", "replace"))
        chain = _MSGID.findall(str(head.get("References", "")).encode("utf-8", "replace"))
        if not chain:
            chain = _MSGID.findall(str(head.get("In-Reply-To", "")).encode("utf-8", "replace"))[:1]
        refs[it.uid] = chain
        if mid and mid[0] not in by_id:
            by_id[mid[0]] = it
    roots = []
    for it in items:
        parent = None
        for ref in reversed(refs[it.uid]):
            cand = by_id.get(ref)
            if cand is not None and cand is not it and not _is_descendant(cand, it):
                parent = cand
                break
        if parent is None:
            roots.append(it)
        else:
            parent.children.append(it)

    def render(node: Item) -> bytes:
        kids = sorted(node.children, key=lambda c: (c.sent, c.msn))
        if not kids:
            return b"%d" % ident(node)
        if len(kids) == 1:
            return b"%d " % ident(node) + render(kids[0])
        return b"%d " % ident(node) + b"".join(b"(" + render(k) + b")" for k in kids)

    return b"".join(b"(" + render(r) + b")" for r in sorted(roots, key=lambda r: (r.sent, r.msn)))


def _is_descendant(node: Item, ancestor: Item) -> bool:
    stack = list(ancestor.children)
    while stack:
        n = stack.pop()
        if n is node:
            return True
        stack.extend(n.children)
    return False
