"""SORT and THREAD (RFC 5256): ordering search results by message data, and grouping them into
threads (ORDEREDSUBJECT, REFERENCES). Runs on the database's reader thread, like SEARCH."""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils
import re
import sqlite3
from dataclasses import dataclass

from msgpack import unpackb

from mailpair.protocols.imap import search
from mailpair.protocols.imap.args import Atom, ParseError

KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
# RFC 5256 section 5 (base subject grammar): subj-blob = "[" *BLOBCHAR "]" *WSP, BLOBCHAR being
# any CHAR but "[" and "]"; subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":";
# subj-leader = (*subj-blob subj-refwd) / WSP; subj-trailer = "(fwd)" / WSP.
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:|\s+)", re.I)
_LEADING_BLOB = re.compile(rf"^{_BLOB}")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.I)
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
    return search._decode_header(b.decode("utf-8", "replace")) if b else ""


def base_subject(raw: bytes | None) -> str:
    """RFC 5256 section 2.1, for i;unicode-casemap comparison."""
    s = " ".join(_decode(raw).split())  # (1) decoded, white space runs as one space
    while True:
        s = _TRAILER.sub("", s)  # (2) every trailing "(fwd)" and blank
        while True:  # (5) repeat (3) and (4) until nothing changes
            before = s
            s = _LEADER.sub("", s)  # (3) one leader: blobs then re/fw/fwd [blob] ":", or blanks
            blob = _LEADING_BLOB.match(s)
            if blob and s[blob.end() :]:  # (4) a leading blob, unless it is all that is left
                s = s[blob.end() :]
            if s == before:
                break
        if s[:5].lower() == "[fwd:" and s.endswith("]"):  # (6) then back to (2)
            s = s[5:-1]
            continue
        return s.casefold()


def _sent(env: list, idate_us: int) -> float:
    if env and env[0]:
        try:
            return email.utils.parsedate_to_datetime(env[0].decode("utf-8", "replace")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return idate_us / 1e6


def _addr_key(addrs, display: bool) -> str:
    # The first address that is one (RFC 5256 3 "the first From address"): group markers, with a
    # NIL host, name no mailbox.
    addrs = [a for a in addrs or [] if a and len(a) == 4 and a[3] is not None]
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


class _Box:
    """A thread container (RFC 5256 REFERENCES): a message, or a dummy for a missing one."""

    __slots__ = ("item", "parent", "children")

    def __init__(self, item: Item | None = None):
        self.item = item
        self.parent: _Box | None = None
        self.children: list[_Box] = []

    def reaches(self, other: _Box) -> bool:
        """True if other is self or below it (so linking would make a loop)."""
        stack = [self]
        while stack:
            n = stack.pop()
            if n is other:
                return True
            stack.extend(n.children)
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link(self, parent: _Box) -> None:
        self.unlink()
        self.parent = parent
        parent.children.append(self)

    def first(self) -> Item | None:
        """The message that dates and names this container (a dummy's first child's)."""
        if self.item is not None:
            return self.item
        return self.children[0].first() if self.children else None


def _date_key(box: _Box) -> tuple:
    it = box.first()
    return (it.sent, it.msn) if it is not None else (0.0, 0)


def _headers_of(it: Item) -> tuple[bytes | None, list[bytes]]:
    head = _HEADERS.parsebytes(it.raw_head or b"")
    mid = _MSGID.findall(str(head.get("Message-ID", "")).encode("utf-8", "replace"))
    chain = _MSGID.findall(str(head.get("References", "")).encode("utf-8", "replace"))
    if not chain:
        chain = _MSGID.findall(str(head.get("In-Reply-To", "")).encode("utf-8", "replace"))[:1]
    return (mid[0] if mid else None), chain


def _is_reply(raw_subject: bytes | None) -> bool:
    s = _decode(raw_subject).strip()
    return bool(_LEADER.match(s)) or bool(_TRAILER.search(s)) or s.lower().startswith("[fwd:")


def _references(items: list[Item], ident) -> bytes:
    """RFC 5256 section 3, REFERENCES: link by References / In-Reply-To with dummy containers for
    missing messages, prune dummies, sort, merge threads of the same base subject, sort children."""
    table: dict[bytes, _Box] = {}
    owns: list[_Box] = []  # every message's container, also those the table cannot name
    for it in sorted(items, key=lambda i: i.msn):
        mid, chain = _headers_of(it)
        # 1A: link the reference chain, never making a loop and never moving a linked child.
        prev = None
        for ref in chain:
            box = table.get(ref)
            if box is None:
                box = table[ref] = _Box()
            if prev is not None and box.parent is None and not box.reaches(prev):
                box.link(prev)
            prev = box
        # 1B: the message's own container (a fresh one if its Message-ID is missing or reused).
        own = table.get(mid) if mid is not None else None
        if own is None or own.item is not None:
            own = _Box(it)
            if mid is not None and mid not in table:
                table[mid] = own
        else:
            own.item = it
        owns.append(own)
        if prev is not None and not own.reaches(prev):
            own.link(prev)
        else:
            own.unlink()
    roots = [b for b in _all_boxes(list(table.values()) + owns) if b.parent is None]
    roots = _prune(roots, at_root=True)
    roots.sort(key=_date_key)
    roots = _merge_subjects(roots)
    for r in roots:
        _sort_children(r)
    roots.sort(key=_date_key)

    def render(box: _Box) -> bytes:
        kids = box.children
        head = b"%d" % ident(box.item) if box.item is not None else b""
        if not kids:
            return head
        if len(kids) == 1 and box.item is not None:
            return head + b" " + render(kids[0])
        inner = b"".join(b"(" + render(k) + b")" for k in kids)
        return head + b" " + inner if head else inner

    return b"".join(b"(" + render(r) + b")" for r in roots)


def _all_boxes(start: list[_Box]) -> list[_Box]:
    """Every container reachable from start, each once."""
    seen: dict[int, _Box] = {}
    stack = list(start)
    while stack:
        b = stack.pop()
        if id(b) in seen:
            continue
        seen[id(b)] = b
        stack.extend(b.children)
        if b.parent is not None:
            stack.append(b.parent)
    return list(seen.values())


def _prune(boxes: list[_Box], at_root: bool) -> list[_Box]:
    """Step 4: drop empty dummies; replace a dummy by its children, except a root dummy with
    more than one child."""
    out: list[_Box] = []
    for b in boxes:
        b.children = _prune(b.children, at_root=False)
        for c in b.children:
            c.parent = b
        if b.item is None:
            if not b.children:
                continue
            if not at_root or len(b.children) == 1:
                for c in b.children:
                    c.parent = b.parent
                out.extend(b.children)
                continue
        out.append(b)
    return out


def _merge_subjects(roots: list[_Box]) -> list[_Box]:
    """Step 6: threads whose roots share a base subject become one thread."""
    by_subject: dict[str, _Box] = {}
    for r in roots:
        it = r.first()
        subj = base_subject(it.env[1]) if it is not None else ""
        if not subj:
            continue
        old = by_subject.get(subj)
        if (
            old is None
            or (old.item is not None and r.item is None)
            or (old.item is not None and r.item is not None and _is_reply(old.item.env[1]) and not _is_reply(r.item.env[1]))
        ):
            by_subject[subj] = r
    out: list[_Box] = []
    for r in roots:
        it = r.first()
        subj = base_subject(it.env[1]) if it is not None else ""
        keep = by_subject.get(subj) if subj else None
        if keep is None or keep is r:
            out.append(r)
            continue
        if keep.item is None and r.item is None:
            for c in r.children:
                c.parent = keep
            keep.children.extend(r.children)
        elif keep.item is None:
            r.parent = keep
            keep.children.append(r)
        elif r.item is not None and _is_reply(r.item.env[1]) and not _is_reply(keep.item.env[1]):
            r.parent = keep
            keep.children.append(r)
        else:
            # Neither is the other's reply: a new dummy holds both, where keep was.
            dummy = _Box()
            pos = out.index(keep) if keep in out else None
            for c in (keep, r):
                c.parent = dummy
                dummy.children.append(c)
            by_subject[subj] = dummy
            if pos is not None:
                out[pos] = dummy
            else:
                out.append(dummy)
    return out


def _sort_children(box: _Box) -> None:
    for c in box.children:
        _sort_children(c)
    box.children.sort(key=_date_key)
