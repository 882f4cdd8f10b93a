"""Response writer: IMAP values as bytes (RFC 9051 section 4), pure functions, no I/O.

Strings go out quoted when they can (short, 7-bit, no CR/LF) and as literals otherwise, so any
byte a message holds reaches the client unchanged. ENVELOPE and BODYSTRUCTURE arrive as the
nested lists the store computed at delivery (mailpair/mime/structure.py) and are only serialised
here, never parsed again.
"""

from __future__ import annotations

import re

_ATOM = re.compile(rb"^[!#$&'+-Z^-z|}~]+$")


def string(b: bytes, utf8: bool = False) -> bytes:
    """A string as a quoted string if it can be one (short, 7-bit or UTF8=ACCEPT, no CR LF NUL),
    else a literal. Plain bytes methods only: this runs for every field of every ENVELOPE."""
    if len(b) < 1024 and (utf8 or b.isascii()) and b"\r" not in b and b"\n" not in b and b"\0" not in b:
        if b"\\" in b or b'"' in b:
            b = b.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + b + b'"'
    return b"{%d}\r\n%s" % (len(b), b)


def nstring(b: bytes | None, utf8: bool = False) -> bytes:
    return b"NIL" if b is None else string(b, utf8)


def astring(b: bytes, utf8: bool = False) -> bytes:
    if b and _ATOM.match(b) and b.upper() != b"NIL":
        return b
    return string(b, utf8)


def literal_header(n: int, binary: bool = False) -> bytes:
    """What goes before n bytes of literal data: {n} CRLF, or ~{n} CRLF for a literal8. A large
    literal is sent as this and its data in two writes, so the data is never copied to join them."""
    return (b"~{%d}\r\n" if binary else b"{%d}\r\n") % n


def literal(b: bytes, binary: bool = False) -> bytes:
    """A small literal in one piece (header and data joined)."""
    return literal_header(len(b), binary) + b


def value(v) -> bytes:
    """Generic nested value: None -> NIL, int -> number, bytes -> string, list -> (a b c)."""
    if v is None:
        return b"NIL"
    if isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, bytes):
        return string(v)
    if isinstance(v, str):
        return string(v.encode())
    return b"(" + b" ".join(value(x) for x in v) + b")"


def _q(b: bytes | None) -> bytes:
    """nstring with the common case (short plain ASCII) first, for ENVELOPE's many fields."""
    if b is None:
        return b"NIL"
    if len(b) < 1024 and b.isascii() and not (b"\r" in b or b"\n" in b or b"\0" in b or b'"' in b or b"\\" in b):
        return b'"' + b + b'"'
    return string(b)


# Serialised addresses by value: the same people write again and again, so a mailbox's header
# FETCH mostly finds its addresses here. Bounded; cleared when full (entries are pure functions
# of their key, so clearing only costs recomputation).
_ADDRESS_MEMO: dict[tuple, bytes] = {}
_MEMO_MAX = 50_000


def _address(a) -> bytes:
    key = tuple(a)
    try:
        hit = _ADDRESS_MEMO.get(key)
    except TypeError:  # not the shape the store writes: say nothing rather than fail
        return b"(NIL NIL NIL NIL)"
    if hit is None:
        if len(a) != 4:
            return b"(NIL NIL NIL NIL)"
        q = _q
        hit = b"(" + q(a[0]) + b" " + q(a[1]) + b" " + q(a[2]) + b" " + q(a[3]) + b")"
        if len(_ADDRESS_MEMO) >= _MEMO_MAX:
            _ADDRESS_MEMO.clear()
        _ADDRESS_MEMO[key] = hit
    return hit


def _addresses(addrs) -> bytes:
    if not addrs:
        return b"NIL"
    if len(addrs) == 1:
        return b"(" + _address(addrs[0]) + b")"
    return b"(" + b"".join([_address(a) for a in addrs]) + b")"


_EMPTY_ENVELOPE = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
_DEFAULT_BODY = (
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)',
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)',
)


def envelope(env) -> bytes:
    """ENVELOPE of a stored structure; a structure of an unexpected shape gives an empty one
    rather than an error (the store always writes the expected shape)."""
    try:
        return _envelope(env)
    except (TypeError, IndexError, AttributeError, ValueError):
        return _EMPTY_ENVELOPE


def body(bs, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (extended) or BODY (basic fields only) of a stored structure."""
    try:
        return _body(bs, extended)
    except (TypeError, IndexError, AttributeError, ValueError, RecursionError):
        return _DEFAULT_BODY[0 if extended else 1]


def _envelope(env) -> bytes:
    """ENVELOPE: date subject from sender reply-to to cc bcc in-reply-to message-id."""
    if not env or len(env) != 10:
        env = [None] * 10
    q = _q
    frm = _addresses(env[2])
    # Sender and Reply-To default to From (the store copies it), so reuse its bytes.
    sender = frm if env[3] == env[2] else _addresses(env[3])
    reply = frm if env[4] == env[2] else _addresses(env[4])
    return b"".join(
        (
            b"(",
            q(env[0]),
            b" ",
            q(env[1]),
            b" ",
            frm,
            b" ",
            sender,
            b" ",
            reply,
            b" ",
            _addresses(env[5]),
            b" ",
            _addresses(env[6]),
            b" ",
            _addresses(env[7]),
            b" ",
            q(env[8]),
            b" ",
            q(env[9]),
            b")",
        )
    )


def _ext(v) -> bytes:
    """Extension data: strings, numbers, NIL and lists of them."""
    if v is None:
        return b"NIL"
    if isinstance(v, bytes):
        return _q(v)
    if isinstance(v, list):
        return b"(" + b" ".join([_ext(x) for x in v]) + b")" if v else b"NIL"
    return value(v)


def _body(bs, extended: bool = True) -> bytes:
    if not isinstance(bs, list) or not bs:
        return b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)'
    if isinstance(bs[0], list):  # multipart: (part)(part) subtype [ext]
        parts = b"".join(_body(p, extended) for p in bs[0]) or _body(None, extended)
        out = parts + b" " + nstring(bs[1])
        if extended:
            out += b"".join(b" " + _ext(x) for x in bs[2:6])
        return b"(" + out + b")"
    basic = [_part_head(bs), b"%d" % (bs[6] or 0)]
    kind = (bs[0] or b"").upper(), (bs[1] or b"").upper()
    rest = bs[7:]
    if kind == (b"MESSAGE", b"RFC822") and len(rest) >= 3:
        basic += [_envelope(rest[0]), _body(rest[1], extended), b"%d" % (rest[2] or 0)]
        rest = rest[3:]
    elif kind[0] == b"TEXT" and rest:
        basic.append(b"%d" % (rest[0] or 0))
        rest = rest[1:]
    if extended:
        ext = rest[:4]
        basic.append(b"NIL NIL NIL NIL" if ext == _NO_EXT else b" ".join([_ext(x) for x in ext]))
    return b"(" + b" ".join(basic) + b")"


_NO_EXT = [None, None, None, None]
_HEAD_MEMO: dict[tuple, bytes] = {}


def _part_head(bs: list) -> bytes:
    """type subtype (params) id description encoding: the same few combinations recur across a
    mailbox, so they are serialised once (bounded memo, as for addresses)."""
    params = bs[2]
    key = (bs[0], bs[1], tuple(params) if isinstance(params, list) else params, bs[3], bs[4], bs[5])
    try:
        hit = _HEAD_MEMO.get(key)
    except TypeError:  # a nested parameter value: not a memo key, just serialise it
        key, hit = None, None
    if hit is None:
        q = _q
        hit = b" ".join([q(bs[0]), q(bs[1]), _ext(params), q(bs[3]), q(bs[4]), q(bs[5])])
        if key is not None:
            if len(_HEAD_MEMO) >= _MEMO_MAX:
                _HEAD_MEMO.clear()
            _HEAD_MEMO[key] = hit
    return hit


def flag_list(flags: str | list[str]) -> bytes:
    if isinstance(flags, str):
        return b"(" + flags.encode() + b")"
    return b"(" + " ".join(flags).encode() + b")"


_MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"]


def internal_date(us: int) -> bytes:
    """date-time in UTC, e.g. "28-Nov-2026 15:18:37 +0000"."""
    import time

    t = time.gmtime(us // 1_000_000)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def seq_set(nums) -> bytes:
    """A compact sequence set (1:3,7) from numbers."""
    nums = sorted(set(nums))
    if not nums:
        return b""
    out = []
    start = prev = nums[0]
    for n in nums[1:]:
        if n == prev + 1:
            prev = n
            continue
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(out)
