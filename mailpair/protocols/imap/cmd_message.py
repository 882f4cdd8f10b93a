"""Commands on the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE (and their UID
forms), CLOSE, UNSELECT, IDLE."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass

from mailpair.protocols.imap import fetch as fetchmod
from mailpair.protocols.imap import framing, reads, search, seqset, wire
from mailpair.protocols.imap import sort as sortmod
from mailpair.protocols.imap.args import Args, Atom, as_number
from mailpair.protocols.imap.session import SELECTED, Bad, Closed, No, Session, command
from mailpair.store import NoSuchMailbox


def _targets(s: Session, text: str, uid: bool) -> list[tuple[int, int]]:
    """(msn, uid) pairs a sequence set names, sorted, against the session's view."""
    sel = s.sel
    ranges = seqset.parse(text)
    if ranges == "$":
        saved = s.saved or set()
        return [(i + 1, u) for i, u in enumerate(sel.uids) if u in saved]
    if uid:
        uids = seqset.resolve_uids(ranges, sel.uids)
        return [(sel.msn_of(u), u) for u in uids]
    msns = seqset.resolve_msn(ranges, len(sel.uids))
    return [(m, sel.uids[m - 1]) for m in msns]


# ---------------------------------------------------------------------------- FETCH
async def _fetch(s: Session, a: Args, uid: bool) -> bytes:
    sel = s.sel
    targets = _targets(s, a.atom("sequence set"), uid)
    req = fetchmod.parse_items(a.next("fetch items"))
    changed_since = None
    vanished = False
    if a.more():
        mods = a.list("fetch modifiers")
        i = 0
        while i < len(mods):
            m = str(mods[i]).upper()
            if m == "CHANGEDSINCE" and i + 1 < len(mods):
                changed_since = as_number(mods[i + 1], "mod-sequence")
                i += 2
            elif m == "VANISHED":
                vanished = True
                i += 1
            elif m == "PARTIAL" and i + 1 < len(mods):  # RFC 9394 3.2: a page of the set
                r, _ = parse_returns([Atom("RETURN"), [Atom("PARTIAL"), mods[i + 1]]])
                lo, hi = r.partial
                targets = targets[lo - 1 : hi] if lo > 0 else targets[max(0, len(targets) + lo) : max(0, len(targets) + hi + 1)]
                i += 2
            else:
                raise Bad(f"unknown fetch modifier {m[:20]}")
        if vanished and (not uid or changed_since is None or not s.qresync):
            raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
        if changed_since is not None:
            s.enable_condstore()
    a.end()
    if any(it.name == "MODSEQ" for it in req.items):
        s.enable_condstore()
    if vanished:
        gone = await s.db.read(reads.expunged_since, sel.box_id, changed_since)
        text = a.values[0]
        ranges = seqset.parse(text)
        if ranges != "$":
            gone = [u for u in gone if seqset.contains(ranges, u, sel.uidnext)]
        if gone:
            s.send(b"* VANISHED (EARLIER) " + wire.seq_set(gone) + b"\r\n")
    if req.sets_seen and not sel.readonly:
        unseen = [u for _, u in targets if "\\Seen" not in sel.flags.get(u, "").split()]
        if unseen:
            await s.db.acommit("store_flags", account=s.user, mailbox=sel.name, uids=unseen, flags=["\\Seen"], mode="add")
    if req.sets_seen and sel.readonly:
        req.sets_seen = False
    batch = max(1, s.settings.fetch_batch if (req.needs_raw or req.needs_bs or req.needs_env) else 5000)
    problems: list[str] = []
    recent = frozenset() if s.rev2 or not sel.recent else frozenset(sel.recent)
    cache = s.server.structure_cache(s.db)
    with_modseq = s.condstore and changed_since is not None

    def read(at: int) -> Awaitable[fetchmod.Rendered]:
        args = (sel.box_id, targets[at : at + batch], req, uid, with_modseq, changed_since, recent, cache)
        return s.db.read(fetchmod.render, *args)

    # Groups of messages (render stops each at fetchmod.GROUP_BYTES of message data) go out one
    # after the other. While a group of small messages goes out, the next is rendered on the
    # reader thread; after a large group, the next is read only once this one has drained, so
    # a FETCH holds about two groups, whatever the mailbox holds and however slow the client.
    pos = 0
    got = await read(0) if targets else None
    while got is not None:
        pos += got.done
        pending: asyncio.Future | None = None
        if pos < len(targets) and got.nbytes < fetchmod.GROUP_BYTES:
            pending = asyncio.ensure_future(read(pos))
        problems += got.problems
        for u, flags, modseq in got.reported:
            sel.record_flags(u, flags, modseq)
        try:
            # The last group's small tail goes out with the tagged reply, in one write.
            await _send_pieces(s, got.pieces, last=pos >= len(targets))
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
        if pos >= len(targets):
            break
        nxt = pending if pending is not None else read(pos)
        got = None  # the group just sent goes before the next is read
        got = await nxt
    if problems:
        raise No(problems[0], b"UNKNOWN-CTE")
    return b"OK FETCH completed"


# Large data goes to the transport in slices of this size, each awaited (drain), so the
# transport's buffer holds about one slice whatever the size of the message.
_SLICE = 1024 * 1024


async def _send_pieces(s: Session, pieces: list[fetchmod.Piece], last: bool) -> None:
    """Send FETCH responses given in pieces (fetch.Rendered) in order, with back-pressure: a
    large piece is written straight to the transport in slices (after what the session holds),
    never joined with anything; small ones are queued with the session's other output."""
    for piece in pieces:
        if len(piece) < _SLICE:
            s.send(piece)
            continue
        await s.flush()
        view = memoryview(piece)
        for i in range(0, len(view), _SLICE):
            s.transport.write(s._pack(view[i : i + _SLICE]))
            await s.transport.drain()
    if not last:
        await s.flush()  # back-pressure between groups; the last one goes out with the reply


@command("FETCH", SELECTED)
async def fetch(s: Session, tag: bytes, a: Args) -> bytes:
    return await _fetch(s, a, uid=False)


@command("UID FETCH", SELECTED)
async def uid_fetch(s: Session, tag: bytes, a: Args) -> bytes:
    return await _fetch(s, a, uid=True)


# ---------------------------------------------------------------------------- STORE
async def _store(s: Session, a: Args, uid: bool) -> bytes:
    sel = s.sel
    if sel.readonly:
        raise No("mailbox is read-only (EXAMINE)", b"READ-ONLY")
    targets = _targets(s, a.atom("sequence set"), uid)
    unchanged_since = None
    if isinstance(a.peek(), list):
        mods = a.list()
        if len(mods) != 2 or str(mods[0]).upper() != "UNCHANGEDSINCE":
            raise Bad("expected (UNCHANGEDSINCE modseq)")
        unchanged_since = as_number(mods[1], "mod-sequence")
        s.enable_condstore()
    op = a.atom("+FLAGS, -FLAGS or FLAGS").upper()
    silent = op.endswith(".SILENT")
    base = op.removesuffix(".SILENT")
    mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}.get(base)
    if mode is None:
        raise Bad(f"unknown store item {op[:20]}")
    flags: list[str] = []
    while a.more():
        v = a.next()
        for f in v if isinstance(v, list) else [v]:
            if not isinstance(f, Atom):
                raise Bad("flags are atoms")
            if f.upper() != "\\RECENT":
                flags.append(str(f))
    if not targets:
        return b"OK STORE completed (no messages)"
    uids = [u for _, u in targets]
    res = await s.db.acommit(
        "store_flags",
        account=s.user,
        mailbox=sel.name,
        uids=uids,
        flags=flags,
        mode=mode,
        unchanged_since=unchanged_since,
    )
    changed = set(res["changed"])
    report = uids if not silent else (sorted(changed) if s.condstore else [])
    wanted = sorted(set(report) | changed)
    current = await s.db.read(reads.flags_of, sel.box_id, wanted) if wanted else {}
    s.send(b"".join(sel.new_keywords(f for f, _ in current.values())))
    for u, (f, modseq) in current.items():
        sel.record_flags(u, f, modseq)
    for u in report:
        if u not in current:
            continue
        f, modseq = current[u]
        msn = sel.msn_of(u)
        if msn is None:
            continue
        parts = [b"FLAGS (" + f.encode() + b")"]
        if uid or s.qresync:
            parts.insert(0, b"UID %d" % u)
        if s.condstore:
            parts.append(b"MODSEQ (%d)" % modseq)
        s.send(b"* %d FETCH (" % msn + b" ".join(parts) + b")\r\n")
    if res["modified"]:
        mod = res["modified"] if uid else [sel.msn_of(u) for u in res["modified"] if sel.msn_of(u)]
        return b"OK [MODIFIED " + wire.seq_set(mod) + b"] conditional STORE failed for some messages"
    return b"OK STORE completed"


@command("STORE", SELECTED)
async def store(s: Session, tag: bytes, a: Args) -> bytes:
    return await _store(s, a, uid=False)


@command("UID STORE", SELECTED)
async def uid_store(s: Session, tag: bytes, a: Args) -> bytes:
    return await _store(s, a, uid=True)


# ---------------------------------------------------------------------------- SEARCH
_RETURN_OPTIONS = {"MIN", "MAX", "COUNT", "ALL", "SAVE", "PARTIAL"}
_PARTIAL = re.compile(r"^(-?)([1-9]\d{0,9}):(-?)([1-9]\d{0,9})$")


@dataclass(slots=True)
class Returns:
    """RETURN (...) of SEARCH (RFC 4731), SORT (ESORT, RFC 5267) and PARTIAL (RFC 9394)."""

    opts: set[str]
    partial: tuple[int, int] | None = None  # positions, 1-based; negative count from the end
    partial_text: bytes = b""


def parse_returns(values: list) -> tuple[Returns | None, list]:
    """RETURN (options) at the head of values, and the values after it."""
    if not (len(values) >= 2 and isinstance(values[0], Atom) and values[0].upper() == "RETURN"):
        return None, values
    if not isinstance(values[1], list):
        raise Bad("RETURN needs a list")
    items = values[1]
    r = Returns(set())
    i = 0
    while i < len(items):
        o = str(items[i]).upper() if isinstance(items[i], Atom) else ""
        if o not in _RETURN_OPTIONS:
            raise Bad("unknown RETURN option")
        if o == "PARTIAL":
            m = _PARTIAL.match(str(items[i + 1])) if i + 1 < len(items) and isinstance(items[i + 1], Atom) else None
            if m is None or m.group(1) != m.group(3):
                raise Bad("PARTIAL needs a range like 1:100 or -1:-100")
            lo, hi = sorted((int(m.group(2)), int(m.group(4))))
            r.partial = (-hi, -lo) if m.group(1) else (lo, hi)
            r.partial_text = str(items[i + 1]).encode()
            i += 1
        r.opts.add(o)
        i += 1
    if not r.opts:
        r.opts = {"ALL"}
    return r, values[2:]


def ordered_set(ids: list[int]) -> bytes:
    """ids in the order given, with runs of consecutive ascending numbers as ranges (ESORT's ALL
    and PARTIAL keep the sort order, RFC 5267 3.2)."""
    out: list[bytes] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(b"%d" % ids[i] if i == j else b"%d:%d" % (ids[i], ids[j]))
        i = j + 1
    return b",".join(out)


def esearch(tag: bytes, uid: bool, ids: list[int], r: Returns, in_order: bool) -> list[bytes]:
    """The ESEARCH items for ids (ascending for SEARCH; in sort order for SORT, in_order)."""
    parts = [b"(TAG " + wire.string(tag) + b")"]
    if uid:
        parts.append(b"UID")
    if ids:
        if "MIN" in r.opts:
            parts.append(b"MIN %d" % (ids[0] if in_order else min(ids)))
        if "MAX" in r.opts:
            parts.append(b"MAX %d" % (ids[-1] if in_order else max(ids)))
        if "ALL" in r.opts:
            parts.append(b"ALL " + (ordered_set(ids) if in_order else wire.seq_set(ids)))
    if "COUNT" in r.opts:
        parts.append(b"COUNT %d" % len(ids))
    if r.partial is not None:
        # RFC 9394 3.1: the results at those positions (from the end when negative), or NIL.
        lo, hi = r.partial
        if lo > 0:
            chosen = ids[lo - 1 : hi]
        else:  # -100:-1 is the last hundred
            chosen = ids[max(0, len(ids) + lo) : max(0, len(ids) + hi + 1)]
        body = (ordered_set(chosen) if in_order else wire.seq_set(chosen)) if chosen else b"NIL"
        parts.append(b"PARTIAL (" + r.partial_text + b" " + body + b")")
    return parts


async def _search(s: Session, tag: bytes, a: Args, uid: bool) -> bytes:
    sel = s.sel
    ret, values = parse_returns(a.values[a.i :])
    try:
        query, _charset = search.parse(values, s.utf8)
    except search.BadCharset:
        raise No("unsupported charset", b"BADCHARSET (UTF-8 US-ASCII)") from None
    if query.uses_modseq:
        s.enable_condstore()
    found = await s.db.read(search.run, sel.box_id, list(sel.uids), query, set(sel.recent), s.saved)
    ids = [f[1] if uid else f[0] for f in found]
    modseq_part = b""
    if query.uses_modseq and found:
        modseq_part = b" (MODSEQ %d)" % max(f[2] for f in found)
    if ret is not None and "SAVE" in ret.opts:
        s.saved = {f[1] for f in found}
        if ret.opts == {"SAVE"}:
            return b"OK SEARCH completed (saved)"
    if ret is None and not s.rev2:
        s.send(b"* SEARCH" + b"".join(b" %d" % n for n in ids) + modseq_part + b"\r\n")
        return b"OK SEARCH completed"
    ret = ret or Returns({"ALL"})
    opts = ret.opts
    parts = esearch(tag, uid, ids, ret, in_order=False)
    if modseq_part and ids:
        # RFC 7162 3.1.5: with only MIN and/or MAX, the highest modseq of the messages returned;
        # with ALL or COUNT, the highest of all that matched.
        if not {"ALL", "COUNT", "PARTIAL"} & opts and {"MIN", "MAX"} & opts:
            key = 1 if uid else 0
            chosen = [f for f in found if ("MIN" in opts and f[key] == min(ids)) or ("MAX" in opts and f[key] == max(ids))]
        else:
            chosen = found
        parts.append(b"MODSEQ %d" % max(f[2] for f in chosen))
    s.send(b"* ESEARCH " + b" ".join(parts) + b"\r\n")
    return b"OK SEARCH completed"


@command("SEARCH", SELECTED)
async def search_cmd(s: Session, tag: bytes, a: Args) -> bytes:
    return await _search(s, tag, a, uid=False)


@command("UID SEARCH", SELECTED)
async def uid_search(s: Session, tag: bytes, a: Args) -> bytes:
    return await _search(s, tag, a, uid=True)


# ---------------------------------------------------------------------------- COPY / MOVE
async def _copy(s: Session, a: Args, uid: bool, move: bool) -> bytes:
    sel = s.sel
    if move and sel.readonly:
        raise No("mailbox is read-only (EXAMINE)", b"READ-ONLY")
    targets = _targets(s, a.atom("sequence set"), uid)
    dest = s.mailbox_in(a.astring("mailbox"))
    a.end()
    uids = [u for _, u in targets]
    if not uids:
        return b"OK %s completed (no messages)" % (b"MOVE" if move else b"COPY")
    try:
        res = await s.db.acommit("move" if move else "copy", account=s.user, src=sel.name, dst=dest, uids=uids)
    except NoSuchMailbox as e:
        if str(e) == f"no such mailbox: {dest}":  # the target, not the selected mailbox, is missing
            raise No(f"no such mailbox: {dest}", b"TRYCREATE") from None
        raise
    pairs = res["pairs"]
    if res.get("dst_id") == sel.box_id:
        # Copied or moved into itself (RFC 6851 3.3 allows it): the new messages reach the view
        # as EXISTS before the tagged reply, after the EXPUNGEs of the originals.
        s.dirty = True
    code = b""
    if pairs:
        code = b"[COPYUID %d %s %s] " % (
            res["uidvalidity"],
            b",".join(b"%d" % p[0] for p in pairs),
            b",".join(b"%d" % p[1] for p in pairs),
        )
    if move:
        if code:
            s.send(b"* OK " + code + b"moved\r\n")
        s.send(b"".join(sel.expunge_now([p[0] for p in pairs], s.qresync)))
        return b"OK MOVE completed"
    return b"OK " + code + b"COPY completed"


@command("COPY", SELECTED)
async def copy(s: Session, tag: bytes, a: Args) -> bytes:
    return await _copy(s, a, uid=False, move=False)


@command("UID COPY", SELECTED)
async def uid_copy(s: Session, tag: bytes, a: Args) -> bytes:
    return await _copy(s, a, uid=True, move=False)


@command("MOVE", SELECTED)
async def move(s: Session, tag: bytes, a: Args) -> bytes:
    return await _copy(s, a, uid=False, move=True)


@command("UID MOVE", SELECTED)
async def uid_move(s: Session, tag: bytes, a: Args) -> bytes:
    return await _copy(s, a, uid=True, move=True)


# ---------------------------------------------------------------------------- EXPUNGE, CLOSE
async def _expunge(s: Session, uids: list[int] | None, silent: bool) -> list[int]:
    sel = s.sel
    if sel.readonly:
        raise No("mailbox is read-only (EXAMINE)", b"READ-ONLY")
    res = await s.db.acommit("expunge", account=s.user, mailbox=sel.name, uids=uids)
    if not silent:
        s.send(b"".join(sel.expunge_now(res["uids"], s.qresync)))
    return res["uids"]


@command("EXPUNGE", SELECTED)
async def expunge(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    await _expunge(s, None, False)
    return b"OK EXPUNGE completed"


@command("UID EXPUNGE", SELECTED)
async def uid_expunge(s: Session, tag: bytes, a: Args) -> bytes:
    uids = [u for _, u in _targets(s, a.atom("UID set"), True)]
    a.end()
    if uids:
        await _expunge(s, uids, False)
    return b"OK EXPUNGE completed"


@command("CLOSE", SELECTED)
async def close(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    if not s.sel.readonly:
        try:
            await _expunge(s, None, True)
        except NoSuchMailbox:
            pass
    s.sel = None
    s.state = "auth"
    return b"OK CLOSE completed"


@command("UNSELECT", SELECTED)
async def unselect(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.sel = None
    s.state = "auth"
    return b"OK UNSELECT completed"


# ---------------------------------------------------------------------------- IDLE
@command("IDLE", frozenset({"auth", "selected"}))
async def idle(s: Session, tag: bytes, a: Args) -> bytes:
    a.end()
    s.send(b"+ idling\r\n")
    s.dirty = s.dirty or s.sel is not None
    await s.sync(True)
    await s.flush()
    s.framer.line_mode = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.settings.idle_timeout
    try:
        while True:
            ev = s.framer.next_event()
            if isinstance(ev, framing.Line):
                if ev.line.strip().upper() == b"DONE":
                    return b"OK IDLE terminated"
                raise Bad("expected DONE")
            if ev is not None:  # pragma: no cover - line mode yields only lines
                continue
            if s._read_task is None:
                s._read_task = asyncio.ensure_future(s.transport.read(65536))
            s.wake.clear()
            if s.dirty:
                s.wake.set()
            waker = asyncio.ensure_future(s.wake.wait())
            remaining = deadline - loop.time()
            if remaining <= 0:
                waker.cancel()
                s.send(b"* BYE IDLE for too long\r\n")
                raise Closed("idle time-out")
            done, _ = await asyncio.wait({s._read_task, waker}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not waker.done():
                waker.cancel()
            if s._read_task is not None and s._read_task.done():
                task, s._read_task = s._read_task, None
                data = task.result()
                if not data:
                    raise Closed("client closed the connection")
                s.feed(data)
            if s.dirty and s.state == "selected":
                await s.sync(True)
                await s.flush()
            elif s.dirty:
                s.dirty = False
    finally:
        s.framer.line_mode = False


# ---------------------------------------------------------------------------- SORT / THREAD
def _charset_and_query(s: Session, values: list) -> search.Query:
    if not values:
        raise Bad("missing charset")
    charset = values[0].decode("ascii", "replace") if isinstance(values[0], bytes) else str(values[0])
    if charset.upper() not in search.CHARSETS:
        raise No("unsupported charset", b"BADCHARSET (UTF-8 US-ASCII)")
    query, _ = search.parse(values[1:], s.utf8)
    return query


async def _sort(s: Session, tag: bytes, a: Args, uid: bool) -> bytes:
    sel = s.sel
    ret, values = parse_returns(a.values[a.i :])  # ESORT (RFC 5267): SORT RETURN (...) (keys) ...
    if not values:
        raise Bad("missing sort criteria")
    criteria = sortmod.parse_criteria(values[0])
    query = _charset_and_query(s, values[1:])
    found = await s.db.read(sortmod.run_sort, sel.box_id, list(sel.uids), query, set(sel.recent), s.saved, criteria)
    ids = [u if uid else m for m, u in found]
    if ret is None:
        s.send(b"* SORT" + b"".join(b" %d" % n for n in ids) + b"\r\n")
        return b"OK SORT completed"
    if "SAVE" in ret.opts:
        s.saved = {u for _, u in found}
    s.send(b"* ESEARCH " + b" ".join(esearch(tag, uid, ids, ret, in_order=True)) + b"\r\n")
    return b"OK SORT completed"


@command("SORT", SELECTED)
async def sort_cmd(s: Session, tag: bytes, a: Args) -> bytes:
    return await _sort(s, tag, a, uid=False)


@command("UID SORT", SELECTED)
async def uid_sort(s: Session, tag: bytes, a: Args) -> bytes:
    return await _sort(s, tag, a, uid=True)


async def _thread(s: Session, a: Args, uid: bool) -> bytes:
    sel = s.sel
    algorithm = a.atom("threading algorithm").upper()
    if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise Bad(f"unknown threading algorithm {algorithm[:20]}")
    query = _charset_and_query(s, a.values[a.i :])
    text = await s.db.read(sortmod.run_thread, sel.box_id, list(sel.uids), query, set(sel.recent), s.saved, algorithm, uid)
    s.send(b"* THREAD " + text + b"\r\n" if text else b"* THREAD\r\n")
    return b"OK THREAD completed"


@command("THREAD", SELECTED)
async def thread_cmd(s: Session, tag: bytes, a: Args) -> bytes:
    return await _thread(s, a, uid=False)


@command("UID THREAD", SELECTED)
async def uid_thread(s: Session, tag: bytes, a: Args) -> bytes:
    return await _thread(s, a, uid=True)
