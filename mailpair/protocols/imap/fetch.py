"""FETCH: parsing the data items a client asks for, and building the responses in bytes.

`render` runs on the database's reader thread with one SQL query per batch of messages, and
returns whole `* n FETCH (...)` lines, so fetching thousands of messages costs no await per
message on the event loop.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field

from msgpack import unpackb

from mailpair.protocols.imap import sections, wire
from mailpair.protocols.imap.args import Atom, ParseError

_SECTION = re.compile(r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d{1,10})(?:\.(\d{1,10}))?>)?$", re.I)
_PART = re.compile(r"^\d{1,5}(?:\.\d{1,5})*$")
_SIMPLE = {
    "UID",
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "MODSEQ",
    "EMAILID",
    "THREADID",
    "SAVEDATE",
}
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


@dataclass(slots=True)
class Item:
    name: str  # UID, FLAGS, ..., or BODY / BINARY / BINARY.SIZE for sections
    peek: bool = True
    path: list[int] = field(default_factory=list)
    spec: str = ""
    fields: list[bytes] = field(default_factory=list)
    partial: tuple[int, int | None] | None = None
    label: bytes = b""  # the item's name in the response


@dataclass(slots=True)
class Request:
    items: list[Item]
    needs_raw: bool
    needs_env: bool
    needs_bs: bool
    sets_seen: bool


def parse_items(v) -> Request:
    names = v if isinstance(v, list) else [v]
    if isinstance(v, Atom) and v.upper() in _MACROS:
        names = [Atom(n) for n in _MACROS[v.upper()]]
    if not names:
        raise ParseError("empty fetch item list")
    items: list[Item] = []
    for n in names:
        if not isinstance(n, Atom):
            raise ParseError("fetch items are atoms")
        items.append(_item(n))
    return Request(
        items=items,
        needs_raw=any(i.name in ("BODY[]", "BINARY", "BINARY.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT") for i in items),
        needs_env=any(i.name == "ENVELOPE" for i in items),
        needs_bs=any(i.name in ("BODYSTRUCTURE", "BODY") for i in items),
        sets_seen=any(not i.peek for i in items),
    )


def _item(n: str) -> Item:
    up = n.upper()
    if up in _SIMPLE:
        return Item(up, peek=up not in ("RFC822", "RFC822.TEXT"), label=up.encode())
    m = _SECTION.match(n)
    if not m:
        raise ParseError(f"unknown fetch item {n[:40]}")
    kind, sec, start, length = m.group(1).upper(), m.group(2), m.group(3), m.group(4)
    path: list[int] = []
    spec = ""
    fields: list[bytes] = []
    text = sec.strip()
    if text:
        head, _, rest = text.partition(" ")
        bits = head.split(".")
        nums = []
        while bits and bits[0].isdigit():
            nums.append(int(bits.pop(0)))
        if any(x == 0 for x in nums):
            raise ParseError("part numbers start at 1")
        path = nums
        spec = ".".join(bits).upper()
        if spec not in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            raise ParseError(f"unknown section {sec[:40]}")
        if spec.startswith("HEADER.FIELDS"):
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")) or not rest[1:-1].split():
                raise ParseError("HEADER.FIELDS needs a list of field names")
            fields = [f.encode("utf-8", "surrogateescape") for f in rest[1:-1].split()]
        elif rest:
            raise ParseError(f"unexpected text in section {sec[:40]}")
        if kind.startswith("BINARY") and spec:
            raise ParseError("BINARY takes part numbers only")
    partial = None
    if start is not None:
        if kind == "BINARY.SIZE":
            raise ParseError("BINARY.SIZE takes no partial")
        partial = (int(start), int(length) if length is not None else None)
    base = (
        "BINARY"
        if kind.startswith("BINARY") and kind != "BINARY.SIZE"
        else ("BINARY.SIZE" if kind == "BINARY.SIZE" else "BODY[]")
    )
    sec_text = ".".join(str(p) for p in path)
    if spec:
        sec_text = (sec_text + "." if sec_text else "") + spec
    if fields:
        sec_text += " (" + " ".join(f.decode("utf-8", "surrogateescape").upper() for f in fields) + ")"
    label_kind = "BODY" if base == "BODY[]" else base
    label = f"{label_kind}[{sec_text}]"
    if partial is not None:
        label += f"<{partial[0]}>"
    return Item(
        base,
        peek=kind.endswith(".PEEK") or kind == "BINARY.SIZE",
        path=path,
        spec=spec,
        fields=fields,
        partial=partial,
        label=label.encode("utf-8", "surrogateescape"),
    )


Target = tuple[int, int]  # (msn, uid)


class StructureCache:
    """Serialised ENVELOPE / BODY / BODYSTRUCTURE by blob id, for one database. A blob never
    changes (its id is the LSN of the record that brought it), so an entry never goes stale; the
    oldest tenth makes way once the cache holds `max_bytes`."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.d: dict[tuple[int, int], bytes] = {}

    def get(self, key: tuple[int, int]) -> bytes | None:
        return self.d.get(key)

    def put(self, key: tuple[int, int], value: bytes) -> None:
        d = self.d
        if self.bytes + len(value) > self.max_bytes and d:
            for k in list(d)[: max(1, len(d) // 10)]:
                self.bytes -= len(d.pop(k))
        old = d.get(key)
        if old is not None:
            self.bytes -= len(old)
        d[key] = value
        self.bytes += len(value)


_ENV, _BODY, _BS = 0, 1, 2


def _cached(cache: StructureCache | None, blob_id: int, kind: int, packed: bytes | None, make) -> bytes:
    if cache is not None:
        hit = cache.get((blob_id, kind))
        if hit is not None:
            return hit
    value = make(unpackb(packed))
    if cache is not None:
        cache.put((blob_id, kind), value)
    return value


def render(
    conn: sqlite3.Connection,
    box_id: int,
    targets: list[Target],
    req: Request,
    with_uid: bool,
    with_modseq: bool,
    changed_since: int | None,
    recent: frozenset[int] = frozenset(),
    cache: StructureCache | None = None,
) -> tuple[bytes, list[tuple[int, str, int]], list[str]]:
    """The FETCH responses for targets (sorted by uid), the (uid, flags, modseq) it reported, and
    problems to tell the client (a part that does not exist answers NIL, per RFC 9051)."""
    if not targets:
        return b"", [], []
    # ENVELOPE and BODYSTRUCTURE come from the cache when it has them, so their columns are read
    # as they are (SQLite reads blob columns lazily; unused ones cost little).
    cols = "m.uid, m.flags, m.internal_date_us, m.size, m.modseq, m.blob_id"
    cols += ", b.envelope" if req.needs_env else ", NULL"
    cols += ", b.bodystructure" if req.needs_bs else ", NULL"
    cols += ", b.raw" if req.needs_raw else ", NULL"
    join = " JOIN blobs b ON b.id = m.blob_id" if (req.needs_env or req.needs_bs or req.needs_raw) else ""

    out: list[bytes] = []
    reported: list[tuple[int, str, int]] = []
    problems: list[str] = []
    msn_of = dict((uid, msn) for msn, uid in targets)
    lo = targets[0][1]
    hi = targets[-1][1]
    conn.execute("BEGIN")
    try:
        if hi - lo + 1 <= 2 * len(targets):
            # Dense: one range scan of the primary key.
            rows = conn.execute(
                f"SELECT {cols} FROM messages m{join} WHERE m.mailbox_id=? AND m.uid BETWEEN ? AND ? ORDER BY m.uid",
                (box_id, lo, hi),
            )
        else:
            # Sparse: look up just the wanted UIDs (a range would read every message between).
            uids = [t[1] for t in targets]
            rows = []
            for i in range(0, len(uids), 500):
                part = uids[i : i + 500]
                rows += conn.execute(
                    f"SELECT {cols} FROM messages m{join} WHERE m.mailbox_id=? AND m.uid IN ({','.join('?' * len(part))})"
                    " ORDER BY m.uid",
                    (box_id, *part),
                ).fetchall()
        for uid, flags, idate, size, modseq, blob_id, env, bs, raw in rows:
            msn = msn_of.get(uid)
            if msn is None:
                continue
            if changed_since is not None and modseq <= changed_since:
                continue
            parts: list[bytes] = []
            if with_uid:
                parts.append(b"UID %d" % uid)
            for it in req.items:
                n = it.name
                if n == "UID":
                    if not with_uid:
                        parts.append(b"UID %d" % uid)
                elif n == "FLAGS":
                    parts.append(b"FLAGS (" + _flags(flags, uid in recent) + b")")
                elif n == "INTERNALDATE":
                    parts.append(b"INTERNALDATE " + wire.internal_date(idate))
                elif n == "RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % size)
                elif n == "MODSEQ":
                    pass  # added once below
                elif n == "ENVELOPE":
                    parts.append(b"ENVELOPE " + _cached(cache, blob_id, _ENV, env, wire.envelope))
                elif n == "BODYSTRUCTURE":
                    parts.append(b"BODYSTRUCTURE " + _cached(cache, blob_id, _BS, bs, wire.body))
                elif n == "BODY":
                    parts.append(b"BODY " + _cached(cache, blob_id, _BODY, bs, _basic_body))
                elif n == "RFC822":
                    parts.append(b"RFC822 " + wire.literal(_no_nul(raw)))
                elif n == "RFC822.HEADER":
                    parts.append(b"RFC822.HEADER " + wire.literal(_no_nul(sections.split(raw).header)))
                elif n == "RFC822.TEXT":
                    parts.append(b"RFC822.TEXT " + wire.literal(_no_nul(sections.split(raw).body)))
                elif n in ("EMAILID", "THREADID", "SAVEDATE"):
                    parts.append(n.encode() + b" NIL")
                else:
                    parts.append(_section_item(it, raw, problems))
            if with_modseq or any(it.name == "MODSEQ" for it in req.items):
                parts.append(b"MODSEQ (%d)" % modseq)
            if req.sets_seen and not any(it.name == "FLAGS" for it in req.items):
                parts.append(b"FLAGS (" + _flags(flags, uid in recent) + b")")
            out.append(b"* %d FETCH (" % msn + b" ".join(parts) + b")\r\n")
            reported.append((uid, flags, modseq))
    finally:
        conn.execute("COMMIT")
    return b"".join(out), reported, problems


def _basic_body(bs) -> bytes:
    return wire.body(bs, False)


def _flags(flags: str, recent: bool) -> bytes:
    if recent:  # \Recent is session state, never stored (IMAP4rev1 only)
        return (flags + " \\Recent" if flags else "\\Recent").encode()
    return flags.encode()


def _section_item(it: Item, raw: bytes, problems: list[str]) -> bytes:
    try:
        if it.name == "BODY[]":
            data = sections.section(raw, it.path, it.spec, it.fields)
        else:
            data = sections.binary(raw, it.path)
    except sections.NoSuchPart:
        return it.label + b" NIL"
    except sections.UnknownEncoding as e:
        problems.append(str(e))
        return it.label + b" NIL"
    if it.name == "BINARY.SIZE":
        return it.label + b" %d" % len(data)
    if it.partial is not None:
        start, length = it.partial
        data = data[start : None if length is None else start + length]
    if it.name == "BINARY":
        return it.label + b" " + wire.literal(data, binary=b"\0" in data)
    return it.label + b" " + wire.literal(_no_nul(data))


def _no_nul(data: bytes) -> bytes:
    """RFC 9051 4.3: NUL may travel only in a literal8 answering BINARY. APPEND stores binary
    parts in base64 (mime/binary.py), so this is the last guard for bytes that came in another
    way (a NUL in a header, mail delivered with one): each NUL becomes 0x80, as Dovecot does,
    which keeps every size the client was told."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data
