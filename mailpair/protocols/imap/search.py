"""SEARCH: parsing search keys (RFC 9051 6.4.4, RFC 7162 MODSEQ, RFC 5182 $) into a predicate,
and evaluating it over a mailbox on the database's reader thread."""

from __future__ import annotations

import datetime as dt
import email.header
import email.parser
import email.policy
import email.utils
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from mailpair.mime import addresses
from mailpair.mime.headers import unfold
from mailpair.protocols.imap import seqset
from mailpair.protocols.imap.args import Atom, ParseError, as_astring, as_number

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
CHARSETS = ("UTF-8", "US-ASCII")


class BadCharset(Exception):
    pass


@dataclass(slots=True)
class Msg:
    msn: int
    uid: int
    flags: set[str]
    idate_us: int
    size: int
    modseq: int
    raw: bytes | None
    _head: object = None
    _text: str | None = None

    def header(self):
        if self._head is None:
            self._head = _HEADERS.parsebytes(self.raw or b"")
        return self._head

    def body_text(self) -> str:
        if self._text is None:
            self._text = _body_text(self.raw or b"")
        return self._text


@dataclass(slots=True)
class Context:
    count: int
    max_uid: int
    recent: set[int]
    saved: set[int] | None  # SEARCHRES


Pred = Callable[[Msg, Context], bool]


@dataclass(slots=True)
class Query:
    pred: Pred
    needs_raw: bool
    uses_modseq: bool


def parse_date(v) -> dt.date:
    s = as_astring(v, "date").decode("ascii", "replace").strip('"')
    try:
        d, m, y = s.split("-")
        return dt.date(int(y), _MONTHS[m.upper()], int(d))
    except (ValueError, KeyError):
        raise ParseError(f"bad date {s[:20]!r} (use 1-Feb-2026)") from None


def _decode_header(value) -> str:
    try:
        parts = email.header.decode_header(str(value))
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
        return str(value)


def _body_text(raw: bytes) -> str:
    try:
        msg = _PARSER.parsebytes(raw)
        out = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            if part.get_content_maintype() not in ("text", "message"):
                continue
            cs = part.get_content_charset() or "utf-8"
            try:
                out.append(payload.decode(cs, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
        return "\n".join(out).casefold()
    except Exception:
        return raw.decode("utf-8", "replace").casefold()


def _header_has(name: str, needle: str) -> Pred:
    def p(m: Msg, c: Context) -> bool:
        values = m.header().get_all(name) or []
        if not needle:
            return bool(values)
        # Folding is not content (RFC 5322 2.2.3): "a b" matches a value folded between a and b.
        return any(needle in " ".join(_decode_header(unfold(str(v))).split()).casefold() for v in values)

    return p


def address_texts(value: str) -> list[str]:
    """What SEARCH FROM/TO/CC/BCC matches for one header value (RFC 9051 6.4.4: the string in
    the envelope's field): the decoded value, and each address as `name <mailbox@host>` with
    its name decoded, comments and quoting removed (the address grammar of RFC 5322 3.4), so a
    search for the display name, the address or both together finds it however it was written."""
    text = unfold(value)
    out = [" ".join(_decode_header(text).split())]
    for name, _adl, mailbox, host in addresses.parse(text):
        if mailbox is None or host is None:
            if mailbox:  # a group's name
                out.append(mailbox)
            continue
        spec = f"{mailbox}@{host}" if host != addresses.MISSING_HOST else mailbox
        display = " ".join(_decode_header(name).split()) if name else ""
        out.append(f"{display} <{spec}>" if display else spec)
    return out


def _address_has(name: str, needle: str) -> Pred:
    def p(m: Msg, c: Context) -> bool:
        values = m.header().get_all(name) or []
        if not needle:
            return bool(values)
        return any(needle in t.casefold() for v in values for t in address_texts(str(v)))

    return p


def _sent_date(m: Msg) -> dt.date:
    value = m.header().get("Date")
    if value:
        try:
            return email.utils.parsedate_to_datetime(str(value)).date()
        except (TypeError, ValueError, IndexError):
            pass
    return _idate(m)


def _idate(m: Msg) -> dt.date:
    return dt.datetime.fromtimestamp(m.idate_us / 1e6, dt.UTC).date()


def _flag(name: str, present: bool = True) -> Pred:
    return (lambda m, c: name in m.flags) if present else (lambda m, c: name not in m.flags)


class Parser:
    def __init__(self, values: list, utf8: bool):
        self.v = values
        self.i = 0
        self.needs_raw = False
        self.uses_modseq = False

    def more(self) -> bool:
        return self.i < len(self.v)

    def next(self):
        if not self.more():
            raise ParseError("search key is missing an argument")
        x = self.v[self.i]
        self.i += 1
        return x

    def text(self) -> str:
        self.needs_raw = True
        return as_astring(self.next(), "search string").decode("utf-8", "replace").casefold()

    def all(self) -> Pred:
        preds = []
        while self.more():
            preds.append(self.key())
        if not preds:
            raise ParseError("no search keys")
        return _and(preds)

    def key(self, depth: int = 0) -> Pred:
        if depth > 64:
            raise ParseError("search keys nested too deeply")
        k = self.next()
        if isinstance(k, list):
            sub = Parser(k, True)
            p = sub.all()
            self.needs_raw |= sub.needs_raw
            self.uses_modseq |= sub.uses_modseq
            return p
        if not isinstance(k, Atom):
            raise ParseError("search keys are atoms")
        u = k.upper()
        simple = {
            "ALL": lambda m, c: True,
            "ANSWERED": _flag("\\Answered"),
            "DELETED": _flag("\\Deleted"),
            "DRAFT": _flag("\\Draft"),
            "FLAGGED": _flag("\\Flagged"),
            "SEEN": _flag("\\Seen"),
            "UNANSWERED": _flag("\\Answered", False),
            "UNDELETED": _flag("\\Deleted", False),
            "UNDRAFT": _flag("\\Draft", False),
            "UNFLAGGED": _flag("\\Flagged", False),
            "UNSEEN": _flag("\\Seen", False),
            "RECENT": lambda m, c: m.uid in c.recent,
            "OLD": lambda m, c: m.uid not in c.recent,
            "NEW": lambda m, c: m.uid in c.recent and "\\Seen" not in m.flags,
        }
        if u in simple:
            return simple[u]
        if u in ("KEYWORD", "UNKEYWORD"):
            kw = as_astring(self.next(), "keyword").decode("utf-8", "replace")
            return _flag(kw, u == "KEYWORD")
        if u in ("BCC", "CC", "FROM", "TO"):
            return _address_has(u.capitalize() if u != "BCC" else "Bcc", self.text())
        if u == "SUBJECT":
            return _header_has("Subject", self.text())
        if u == "HEADER":
            name = as_astring(self.next(), "header name").decode("utf-8", "replace")
            return _header_has(name, self.text())
        if u == "BODY":
            needle = self.text()
            return lambda m, c: needle in m.body_text()
        if u == "TEXT":
            needle = self.text()

            def text(m: Msg, c: Context) -> bool:
                head = "\n".join(f"{k}: {_decode_header(v)}" for k, v in m.header().items()).casefold()
                return needle in head or needle in m.body_text()

            return text
        if u in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            d = parse_date(self.next())
            get = _sent_date if u.startswith("SENT") else _idate
            if u.startswith("SENT"):
                self.needs_raw = True
            op = u.removeprefix("SENT")
            if op == "BEFORE":
                return lambda m, c: get(m) < d
            if op == "ON":
                return lambda m, c: get(m) == d
            return lambda m, c: get(m) >= d
        if u in ("OLDER", "YOUNGER"):  # WITHIN (RFC 5032)
            secs = as_number(self.next(), "interval")
            import time

            def within(m: Msg, c: Context) -> bool:
                age = time.time() - m.idate_us / 1e6
                return age >= secs if u == "OLDER" else age <= secs

            return within
        if u in ("LARGER", "SMALLER"):
            n = as_number(self.next(), "size")
            return (lambda m, c: m.size > n) if u == "LARGER" else (lambda m, c: m.size < n)
        if u == "NOT":
            p = self.key(depth + 1)
            return lambda m, c: not p(m, c)
        if u == "OR":
            a, b = self.key(depth + 1), self.key(depth + 1)
            return lambda m, c: a(m, c) or b(m, c)
        if u == "UID":
            s = seqset.parse(self.next())
            if s == "$":
                return lambda m, c: c.saved is not None and m.uid in c.saved
            return lambda m, c: seqset.contains(s, m.uid, c.max_uid)
        if u == "MODSEQ":
            self.uses_modseq = True
            nxt = self.next()
            if isinstance(nxt, bytes):  # entry name and type: accepted, all entries share one modseq
                self.next()
                nxt = self.next()
            n = as_number(nxt, "mod-sequence")
            return lambda m, c: m.modseq >= n
        if u == "$":
            return lambda m, c: c.saved is not None and m.uid in c.saved
        if u and (u[0].isdigit() or u[0] == "*"):
            s = seqset.parse(k)
            return lambda m, c: seqset.contains(s, m.msn, c.count)
        raise ParseError(f"unknown search key {k[:30]}")


def _and(preds: list[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    return lambda m, c: all(p(m, c) for p in preds)


def parse(values: list, utf8: bool = False) -> tuple[Query, str | None]:
    """A query from SEARCH arguments after any RETURN options; also the CHARSET, if given."""
    charset = None
    if len(values) >= 2 and isinstance(values[0], Atom) and values[0].upper() == "CHARSET":
        charset = as_astring(values[1], "charset").decode("ascii", "replace").upper()
        values = values[2:]
        if charset not in CHARSETS:
            raise BadCharset(charset)
    p = Parser(values, utf8)
    pred = p.all()
    return Query(pred, p.needs_raw, p.uses_modseq), charset


def run(
    conn: sqlite3.Connection, box_id: int, uids: list[int], q: Query, recent: set[int], saved: set[int] | None
) -> list[tuple[int, int, int]]:
    """(msn, uid, modseq) of the messages of the view (uids, in order) that match."""
    if not uids:
        return []
    ctx = Context(len(uids), uids[-1], recent, saved)
    msn_of = {u: i + 1 for i, u in enumerate(uids)}
    cols = "m.uid, m.flags, m.internal_date_us, m.size, m.modseq" + (", b.raw" if q.needs_raw else ", NULL")
    join = " JOIN blobs b ON b.id = m.blob_id" if q.needs_raw else ""
    out = []
    for uid, flags, idate, size, modseq, raw in conn.execute(
        f"SELECT {cols} FROM messages m{join} WHERE m.mailbox_id=? ORDER BY m.uid", (box_id,)
    ):
        msn = msn_of.get(uid)
        if msn is None:
            continue
        m = Msg(msn, uid, set(flags.split()), idate, size, modseq, raw)
        if q.pred(m, ctx):
            out.append((msn, uid, modseq))
    return out
