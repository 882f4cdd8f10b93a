"""FETCH: parsing the data items a client asks for, and building the responses in bytes.

`render` runs on the database's reader thread with one SQL query per group of messages, so
fetching thousands of small messages costs no await per message on the event loop.

Rules kept, so that a FETCH costs memory in proportion to a message, not to the command:
- a group stops once the message data it read passes `GROUP_BYTES` (a large message is a group
  of its own), and the caller sends one group before reading past the next;
- the responses come back as pieces whose concatenation is the wire bytes; a large literal's
  data is a piece of its own, the bytes read from the store (or a view of them), never joined;
- a message's bytes are read once; a large one outside the row (the cursor reads one row
  ahead), and partials of the whole message (BODY[]<a.b>) read just their range from the blob.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import sqlite3
from collections.abc import Iterator
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


# A group of messages read in one reader-thread hop stops once it holds this many bytes of
# message data: FETCH holds a group (and the next, while this one goes out) at a time, whatever
# the size of the mailbox.
GROUP_BYTES = 4 * 1024 * 1024
# Literal data this large is its own piece, never copied into a joined response.
SEPARATE_BYTES = 64 * 1024

Piece = bytes | memoryview


@dataclass(slots=True)
class Rendered:
    """What one `render` call produced. Concatenated, `pieces` are the `* n FETCH` responses; a
    large literal's data is a piece of its own (the stored bytes themselves, or a memoryview of
    them), so nothing copies it on the way to the transport."""

    pieces: list[Piece]
    reported: list[tuple[int, str, int]]  # (uid, flags, modseq) of each response
    problems: list[str]  # to tell the client (a part that does not exist answers NIL, RFC 9051)
    done: int  # targets covered; the caller renders targets[done:] in another call
    nbytes: int  # bytes of message data read from the store


class _Out:
    """Response bytes in pieces: small ones are joined, a large literal's data stays apart."""

    __slots__ = ("pieces", "small")

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.small: list[Piece] = []

    def literal(self, data: Piece, binary: bool = False) -> None:
        self.small.append(wire.literal_header(len(data), binary))
        if len(data) < SEPARATE_BYTES:
            self.small.append(data)
        else:
            self.close()
            self.pieces.append(data)

    def close(self) -> None:
        if self.small:
            self.pieces.append(b"".join(self.small))
            self.small.clear()


def whole_ranges_only(req: Request) -> bool:
    """Every item that needs the message's bytes is a partial of the whole message
    (BODY[]<a.b>, BINARY[]<a.b>), so only those ranges need reading, not the blob."""
    raw_items = [
        it for it in req.items if it.name in ("BODY[]", "BINARY", "BINARY.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT")
    ]
    return bool(raw_items) and all(
        it.name in ("BODY[]", "BINARY") and not it.path and not it.spec and it.partial is not None for it in raw_items
    )


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
    budget: int | None = None,
) -> Rendered:
    """The FETCH responses for the first targets (sorted by uid), up to the message that takes
    the data read past `budget` bytes (at least one message); `done` says how far it got.

    A message's bytes are read once, when the cursor reaches it; partials of the whole message
    read only their ranges (incremental blob I/O)."""
    if not targets:
        return Rendered([], [], [], 0, 0)
    budget = GROUP_BYTES if budget is None else budget
    ranges = whole_ranges_only(req)
    whole = req.needs_raw and not ranges
    # ENVELOPE and BODYSTRUCTURE come from the cache when it has them, so their columns are read
    # as they are (SQLite reads blob columns lazily; unused ones cost little).
    cols = "m.uid, m.flags, m.internal_date_us, m.size, m.modseq, m.blob_id"
    cols += ", b.envelope" if req.needs_env else ", NULL"
    cols += ", b.bodystructure" if req.needs_bs else ", NULL"
    # A large message's bytes are not in the row: the cursor steps one row ahead, so the next
    # message would be read while this one is still held. They are read when their turn comes.
    cols += f", CASE WHEN m.size < {SEPARATE_BYTES} THEN b.raw END" if whole else ", NULL"
    join = " JOIN blobs b ON b.id = m.blob_id" if (req.needs_env or req.needs_bs or whole) else ""

    out = _Out()
    reported: list[tuple[int, str, int]] = []
    problems: list[str] = []
    msn_of = dict((uid, msn) for msn, uid in targets)
    uids = [t[1] for t in targets]
    lo = uids[0]
    hi = uids[-1]
    nbytes = 0
    done = len(targets)
    cursors: list[sqlite3.Cursor] = []
    add_modseq = with_modseq or any(it.name == "MODSEQ" for it in req.items)
    add_flags = req.sets_seen and not any(it.name == "FLAGS" for it in req.items)

    def rows():
        if hi - lo + 1 <= 2 * len(targets):
            # Dense: one range scan of the primary key.
            cur = conn.execute(
                f"SELECT {cols} FROM messages m{join} WHERE m.mailbox_id=? AND m.uid BETWEEN ? AND ? ORDER BY m.uid",
                (box_id, lo, hi),
            )
            cursors.append(cur)
            yield from cur
            return
        # Sparse: look up just the wanted UIDs (a range would read every message between).
        for i in range(0, len(uids), 500):
            part = uids[i : i + 500]
            cur = conn.execute(
                f"SELECT {cols} FROM messages m{join} WHERE m.mailbox_id=? AND m.uid IN ({','.join('?' * len(part))})"
                " ORDER BY m.uid",
                (box_id, *part),
            )
            cursors.append(cur)
            yield from cur

    conn.execute("BEGIN")
    it_rows = rows()
    try:
        for uid, flags, idate, size, modseq, blob_id, env, bs, raw in it_rows:
            msn = msn_of.get(uid)
            if msn is None:
                continue
            if changed_since is not None and modseq <= changed_since:
                continue
            if whole:
                if raw is None:
                    raw = _read_blob(conn, blob_id)
                nbytes += len(raw)
            small = out.small
            small.append(b"* %d FETCH (" % msn)
            first = True
            if with_uid:
                small.append(b"UID %d" % uid)
                first = False
            for it in req.items:
                n = it.name
                if n == "MODSEQ" or (n == "UID" and with_uid):
                    continue  # MODSEQ is added once below; UID is already there
                if not first:
                    small.append(b" ")
                first = False
                if n == "UID":
                    small.append(b"UID %d" % uid)
                elif n == "FLAGS":
                    small.append(b"FLAGS (" + _flags(flags, uid in recent) + b")")
                elif n == "INTERNALDATE":
                    small.append(b"INTERNALDATE " + wire.internal_date(idate))
                elif n == "RFC822.SIZE":
                    small.append(b"RFC822.SIZE %d" % size)
                elif n == "ENVELOPE":
                    small.append(b"ENVELOPE " + _cached(cache, blob_id, _ENV, env, wire.envelope))
                elif n == "BODYSTRUCTURE":
                    small.append(b"BODYSTRUCTURE " + _cached(cache, blob_id, _BS, bs, wire.body))
                elif n == "BODY":
                    small.append(b"BODY " + _cached(cache, blob_id, _BODY, bs, _basic_body))
                elif n == "RFC822":
                    small.append(b"RFC822 ")
                    out.literal(_no_nul(raw))
                elif n == "RFC822.HEADER":
                    small.append(b"RFC822.HEADER ")
                    _literal(out, *sections.section_window(raw, [], "HEADER", []))
                elif n == "RFC822.TEXT":
                    small.append(b"RFC822.TEXT ")
                    _literal(out, *sections.section_window(raw, [], "TEXT", []))
                elif n in ("EMAILID", "THREADID", "SAVEDATE"):
                    small.append(n.encode() + b" NIL")
                elif ranges:
                    nbytes += _range_item(conn, out, it, blob_id)
                else:
                    _section_item(out, it, raw, problems)
            if add_modseq:
                out.small.append(b" MODSEQ (%d)" % modseq if not first else b"MODSEQ (%d)" % modseq)
                first = False
            if add_flags:
                fl = b"FLAGS (" + _flags(flags, uid in recent) + b")"
                out.small.append(fl if first else b" " + fl)
            out.small.append(b")\r\n")
            reported.append((uid, flags, modseq))
            raw = None  # let the message's bytes go before the next row is read
            if nbytes >= budget:  # the group is full: the rest are the next call's
                done = bisect.bisect_right(uids, uid)
                break
    finally:
        it_rows.close()
        for cur in cursors:
            cur.close()
        conn.execute("COMMIT")
    out.close()
    return Rendered(out.pieces, reported, problems, done, nbytes)


def _basic_body(bs) -> bytes:
    return wire.body(bs, False)


def _flags(flags: str, recent: bool) -> bytes:
    if recent:  # \Recent is session state, never stored (IMAP4rev1 only)
        return (flags + " \\Recent" if flags else "\\Recent").encode()
    return flags.encode()


def _section_item(out: _Out, it: Item, raw: bytes, problems: list[str]) -> None:
    small = out.small
    try:
        if it.name == "BODY[]":
            buf, start, stop = sections.section_window(raw, it.path, it.spec, it.fields)
        else:
            buf, start, stop = sections.binary_window(raw, it.path)
    except sections.NoSuchPart:
        small.append(it.label + b" NIL")
        return
    except sections.UnknownEncoding as e:
        problems.append(str(e))
        small.append(it.label + b" NIL")
        return
    if it.name == "BINARY.SIZE":
        small.append(it.label + b" %d" % (stop - start))
        return
    small.append(it.label + b" ")
    if it.partial is not None:
        first, length = it.partial
        if length is not None:
            stop = min(stop, start + first + length)
        start = min(start + first, stop)
    _literal(out, buf, start, stop, binary=it.name == "BINARY")


def _literal(out: _Out, buf: bytes, start: int, stop: int, binary: bool = False) -> None:
    """buf[start:stop] as a literal: a view of a large stretch, a copy of a small one (or of
    any that holds a NUL outside BINARY, which becomes 0x80 as _no_nul says); literal8 for
    BINARY data that holds a NUL."""
    nul = buf.find(b"\0", start, stop) >= 0
    if start == 0 and stop == len(buf):
        piece: Piece = buf
    elif stop - start >= SEPARATE_BYTES:
        piece = memoryview(buf)[start:stop]
    else:
        piece = buf[start:stop]
    if binary:
        out.literal(piece, binary=nul)
    else:
        out.literal(bytes(piece).replace(b"\0", b"\x80") if nul else piece)


# The page cache a large read may fill on the reader's connection, in KiB.
_READ_CACHE_KIB = 1024


@contextlib.contextmanager
def _blob(conn: sqlite3.Connection, blob_id: int) -> Iterator[sqlite3.Blob]:
    """A stored message's bytes, opened for incremental reading, with the connection's page
    cache held small meanwhile: the pages a large message is read through would otherwise stay
    cached (the store's connections keep up to 64 MiB each), which is as much memory again as
    the messages read, up to that size. The usual size is back once the read is done; what it
    evicted (a few hot index pages) is read again from the file system's cache."""
    (size,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute(f"PRAGMA cache_size=-{_READ_CACHE_KIB}")
    try:
        with conn.blobopen("blobs", "raw", blob_id, readonly=True) as blob:
            yield blob
    finally:
        conn.execute(f"PRAGMA cache_size={int(size)}")


def _read_blob(conn: sqlite3.Connection, blob_id: int) -> bytes:
    """A stored message's bytes, read straight into one bytes object (a SELECT would hold
    another copy in SQLite until the statement is reset)."""
    with _blob(conn, blob_id) as blob:
        return blob.read()


def _range_item(conn: sqlite3.Connection, out: _Out, it: Item, blob_id: int) -> int:
    """BODY[]<a.b> or BINARY[]<a.b> read from the stored blob, just the range; the bytes read."""
    assert it.partial is not None
    start, length = it.partial
    with _blob(conn, blob_id) as blob:
        total = len(blob)
        stop = total if length is None else min(total, start + length)
        if start >= stop:
            data = b""
        else:
            blob.seek(start)
            data = blob.read(stop - start)
    out.small.append(it.label + b" ")
    if it.name == "BINARY":
        out.literal(data, binary=b"\0" in data)
    else:
        out.literal(_no_nul(data))
    return len(data)


def _no_nul(data: bytes) -> bytes:
    """RFC 9051 4.3: NUL may travel only in a literal8 answering BINARY. APPEND stores binary
    parts in base64 (mime/binary.py), so this is the last guard for bytes that came in another
    way (a NUL in a header, mail delivered with one): each NUL becomes 0x80, as Dovecot does,
    which keeps every size the client was told."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data
