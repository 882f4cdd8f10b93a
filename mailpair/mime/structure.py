"""ENVELOPE and BODYSTRUCTURE (RFC 3501 7.4.2 / RFC 9051 7.5.2) computed from raw bytes.

The result is plain nested lists of bytes, ints and None, ready for the IMAP response writer and
for msgpack (so it can travel inside a log record): the active computes it once, and every copy
stores exactly what the active computed.

Rules kept: never raise on any input (bad charsets, missing headers, broken MIME all still give a
structure); header strings are the raw header bytes, unfolded, never decoded, as IMAP requires.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import re
from collections.abc import Callable
from email.generator import BytesGenerator
from email.message import Message
from typing import Any

from mailpair.mime import addresses, bounded
from mailpair.mime.headers import POLICY, unfold

_PARSER = email.parser.BytesParser(policy=POLICY)
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=POLICY)
_CRLF = email.policy.compat32.clone(linesep="\r\n")

Nested = list  # nested lists of bytes | int | None


Headers = dict[str, list]  # lower-case name -> raw values in order, built once per part


def _headers(msg: Message) -> Headers:
    """A header's values as parsed, before compat32 turns 8-bit ones (RFC 6532 UTF-8 headers) into
    Header objects whose str() replaces the bytes with U+FFFD; indexed once so the ten ENVELOPE
    fields do not each walk every header."""
    out: Headers = {}
    for k, v in msg.raw_items():
        out.setdefault(k.lower(), []).append(v)
    return out


def _raw_header(h: Headers, name: str) -> bytes | None:
    """name: lower case, as the index keeps it."""
    values = h.get(name)
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str):
        value = str(value)
    if "\n" in value:
        value = value.replace("\r\n", "").replace("\n", "")
    return value.strip().encode("utf-8", "surrogateescape")


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_SIMPLE_ADDRESS = re.compile(rf"\s*(?:((?:{_ATOM})(?: {_ATOM})*) ?<({_ATOM}@{_ATOM})>|({_ATOM}@{_ATOM}))\s*")


def _simple_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """The common case (`Name <a@b>`, `a@b`, lists of them) without the email package's full
    RFC 5322 parser, which costs a third of a delivery; anything else (quotes, comments, groups,
    odd spacing) returns None and goes to getaddresses, which gives the same answer here."""
    out = []
    for value in values:
        for piece in value.split(","):
            m = _SIMPLE_ADDRESS.fullmatch(piece)
            if m is None:
                return None
            display, bracketed, bare = m.groups()
            out.append((display or "", bracketed or bare))
    return out


def _enc(s: str | None) -> bytes | None:
    return s.encode("utf-8", "surrogateescape") if s else None


def _address_structs(pairs: list[tuple[str, str]]) -> Nested:
    """ENVELOPE addresses of the fast path's (display, address) pairs."""
    out: Nested = []
    for display, addr in pairs:
        if not addr and not display:
            continue
        mailbox, at, host = addr.rpartition("@")
        if not at:
            mailbox, host = addr, ""
        # A NIL host would read as a group marker (RFC 3501 7.4.2): see addresses.MISSING_HOST.
        out.append([_enc(display), None, _enc(mailbox), _enc(host or addresses.MISSING_HOST)])
    return out


def _addresses(h: Headers, name: str) -> Nested | None:
    """name: lower case, as the index keeps it."""
    values = h.get(name)
    if not values:
        return None
    out: Nested = []
    for v in values:
        value = unfold(v if isinstance(v, str) else str(v))
        pairs = _simple_addresses([value])
        if pairs is not None:
            out += _address_structs(pairs)
        else:  # groups, comments, quotes, routes: the full RFC 5322 grammar
            out += [
                [_enc(n), _enc(adl), None if mbox is None else mbox.encode("utf-8", "surrogateescape"), _enc(host)]
                for n, adl, mbox, host in addresses.parse(value)
            ]
    return out or None


def envelope(msg: Message) -> Nested:
    return _envelope_of(_headers(msg))


def _envelope_of(h: Headers) -> Nested:
    sender_from = _addresses(h, "from")
    sender = _addresses(h, "sender") or sender_from
    reply_to = _addresses(h, "reply-to") or sender_from
    return [
        _raw_header(h, "date"),
        _raw_header(h, "subject"),
        sender_from,
        sender,
        reply_to,
        _addresses(h, "to"),
        _addresses(h, "cc"),
        _addresses(h, "bcc"),
        _raw_header(h, "in-reply-to"),
        _raw_header(h, "message-id"),
    ]


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode("utf-8", "surrogateescape")


def _params(msg: Message, header: str) -> Nested | None:
    try:
        params = msg.get_params(header=header)
    except Exception:
        return None
    if not params:
        return None
    out: Nested = []
    for key, value in params[1:]:
        if isinstance(value, tuple):  # RFC 2231 continuation: keep it as sent
            value = email.utils.collapse_rfc2231_value(value)
        out += [_b(key.upper()), _b(str(value))]
    return out or None


def _disposition_of(value: Any, params: Callable[[], Nested | None]) -> Nested | None:
    if value is None:
        return None
    kind = str(value).split(";", 1)[0].strip()
    if not kind:
        return None
    return [_b(kind.upper()), params()]


def _disposition(msg: Message) -> Nested | None:
    return _disposition_of(msg.get("Content-Disposition"), lambda: _params(msg, "content-disposition"))


def _language_of(value: Any) -> Nested | None:
    if value is None:
        return None
    langs = [v.strip() for v in str(value).split(",") if v.strip()]
    return [_b(v) for v in langs] or None


def _language(msg: Message) -> Nested | None:
    return _language_of(msg.get("Content-Language"))


def _encoding_of(value: Any) -> str:
    return (value or "7BIT").strip().upper() or "7BIT"


def _split_header_body(raw: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return raw[: i + len(sep)], raw[i + len(sep) :]
    return raw, b""


def _lines(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _crlf(body: bytes) -> bytes:
    return body if b"\r\n" in body else body.replace(b"\n", b"\r\n")


def _part_body_bytes(msg: Message) -> bytes:
    payload = msg.get_payload(decode=False)
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        # An enclosed message/rfc822: compat32 holds it parsed; its bytes are its flattened form.
        buf = io.BytesIO()
        BytesGenerator(buf, mangle_from_=False, policy=_CRLF).flatten(payload[0])
        return buf.getvalue()
    if isinstance(payload, str):
        data = payload.encode("utf-8", "surrogateescape")
    elif isinstance(payload, bytes):
        data = payload
    else:
        data = b""
    # The parser keeps line endings as they were; count sizes on CRLF form as IMAP does.
    return _crlf(data)


def bodystructure(msg: Message, extended: bool = True) -> Nested:
    ctype = msg.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    # compat32 also calls message/rfc822 "multipart"; IMAP describes it as MESSAGE/RFC822 below.
    if msg.is_multipart() and isinstance(msg.get_payload(), list) and ctype != "message/rfc822":
        parts: Nested = [bodystructure(p, extended) for p in msg.get_payload()]
        if not parts:
            parts = [bodystructure(Message(), extended)]
        out = [parts, _b(subtype.upper())]
        if extended:
            out += [
                _params(msg, "content-type"),
                _disposition(msg),
                _language(msg),
                _raw_header(_headers(msg), "content-location"),
            ]
        return out
    body = _part_body_bytes(msg)
    h = _headers(msg)
    encoding = _encoding_of(msg.get("Content-Transfer-Encoding"))
    out = basic_fields(maintype, subtype, _params(msg, "content-type"), h, encoding, len(body))
    if ctype == "message/rfc822":
        inner = msg.get_payload()
        inner_msg = inner[0] if isinstance(inner, list) and inner else None
        if not isinstance(inner_msg, Message):
            inner_msg = _PARSER.parsebytes(body)
        out += [envelope(inner_msg), bodystructure(inner_msg, extended), _lines(body)]
    elif maintype == "text":
        out.append(_lines(body))
    if extended:
        out += [_raw_header(h, "content-md5"), _disposition(msg), _language(msg), _raw_header(h, "content-location")]
    return out


def basic_fields(maintype: str, subtype: str, params: Nested | None, h: Headers, encoding: str, size: int) -> Nested:
    """The seven fields every non-multipart BODYSTRUCTURE starts with (RFC 3501 7.4.2 body-fields),
    text parts defaulting to CHARSET US-ASCII (RFC 2045 5.2)."""
    if params is None and maintype == "text":
        params = [b"CHARSET", b"US-ASCII"]
    return [
        _b(maintype.upper()),
        _b(subtype.upper()),
        params,
        _raw_header(h, "content-id"),
        _raw_header(h, "content-description"),
        _b(encoding),
        size,
    ]


def _leaf(
    maintype: str,
    subtype: str,
    params: Nested | None,
    h: Headers,
    encoding: str,
    body: bytes,
    disposition: Nested | None,
    language: Nested | None,
) -> Nested:
    """BODYSTRUCTURE of a message that is one part (not multipart, not message/*); body in CRLF
    form."""
    out = basic_fields(maintype, subtype, params, h, encoding, len(body))
    if maintype == "text":
        out.append(_lines(body))
    out += [_raw_header(h, "content-md5"), disposition, language, _raw_header(h, "content-location")]
    return out


def _single_part_structure(msg: Message, body: bytes) -> Nested:
    """BODYSTRUCTURE of a non-multipart message from its parsed headers and raw body, without
    feeding the body line by line through the email parser (most mail is a single text part)."""
    return _leaf(
        msg.get_content_maintype(),
        msg.get_content_subtype(),
        _params(msg, "content-type"),
        _headers(msg),
        _encoding_of(msg.get("Content-Transfer-Encoding")),
        _crlf(body),
        _disposition(msg),
        _language(msg),
    )


# A header block as compat32's header parser takes it without a defect: fields (a printable name,
# a colon) with their continuation lines, then the blank line. Lines end in LF or CRLF only: the
# email parser also breaks lines at a bare CR, and str.splitlines at \x0b, \x0c, \x1c-\x1e.
_TEXT = r"[^\r\n\x0b\x0c\x1c\x1d\x1e]"
_CLEAN_BLOCK = re.compile(rf"(?:[\x21-\x39\x3b-\x7e]+:{_TEXT}*\r?\n(?:[ \t]{_TEXT}*\r?\n)*)*\r?\n")
# One field of a clean block: the value is what header_source_parse keeps, the first line's
# leading blanks cut and the break at the end dropped, continuation lines and their breaks kept.
_FIELD = re.compile(rf"^([\x21-\x39\x3b-\x7e]+):[ \t]*({_TEXT}*(?:\r?\n[ \t]{_TEXT}*)*)", re.MULTILINE)


def _fast_fields(header: bytes) -> Headers | None:
    """The header block (ending with its blank line) indexed exactly as compat32's header parser
    would store it, without the email package's feed parser and Message, which cost most of a
    delivery's CPU. Only clean blocks are taken; anything else (a "From " line, a stray line, a
    bare CR) returns None and the email package decides."""
    text = header.decode("ascii", "surrogateescape")
    if _CLEAN_BLOCK.fullmatch(text) is None:
        return None
    fields: Headers = {}
    for name, value in _FIELD.findall(text):
        key = name.lower()
        if key in fields:
            fields[key].append(value)
        else:
            fields[key] = [value]
    return fields


def _tiny_params(name: str, value: str) -> Nested | None:
    """Parameters of one header by the email package's own rules (quoting, RFC 2231)."""
    msg = Message(policy=POLICY)
    msg.set_raw(name, value)
    return _params(msg, name.lower())


_MIME_FIELDS = ("content-type", "content-transfer-encoding", "content-disposition", "content-language")


def _lean_structure(h: Headers, body: bytes) -> Nested | None:
    """The BODYSTRUCTURE _single_part_structure gives, from an index of clean header fields.
    None for multipart and message/* (the full parser walks those) and when a MIME field has
    8-bit bytes (compat32 turns those into Header objects; the email package decides)."""
    for name in _MIME_FIELDS:
        values = h.get(name)
        if values and not values[0].isascii():
            return None
    # The MIME fields unfolded, as the email package (POLICY) reads them on the other path.
    content_type, encoding, disposition, language = (unfold(h[name][0]) if name in h else None for name in _MIME_FIELDS)
    ctype = "text/plain"
    if content_type is not None:
        ctype = content_type.partition(";")[0].strip().lower()
        if ctype.count("/") != 1:
            ctype = "text/plain"
    maintype, _, subtype = ctype.partition("/")
    if maintype in ("multipart", "message"):
        return None
    return _leaf(
        maintype,
        subtype,
        _tiny_params("Content-Type", content_type) if content_type and ";" in content_type else None,
        h,
        _encoding_of(encoding),
        _crlf(body),
        _disposition_of(disposition, lambda: _tiny_params("Content-Disposition", disposition) if ";" in disposition else None),
        _language_of(language),
    )


def _header_message(header: bytes, default: str) -> Message:
    msg = _HEADER_PARSER.parsebytes(header)
    msg.set_default_type(default)
    return msg


def _bounded_structure(raw: bytes) -> Nested:
    """BODYSTRUCTURE of the bounded walk (mime/bounded.py), for messages past its limits."""

    def one(n: bounded.Node) -> Nested:
        head = _header_message(n.entity.header, n.entity.default)
        if n.children is not None:
            parts = [one(c) for c in n.children] or [bodystructure(Message())]
            return [
                parts,
                _b(n.ctype.partition("/")[2].upper()),
                _params(head, "content-type"),
                _disposition(head),
                _language(head),
                _raw_header(_headers(head), "content-location"),
            ]
        out = _single_part_structure(head, n.entity.body)
        if n.opaque:  # composite past the limits: opaque data, its other fields as they were
            out[0:3] = [b"APPLICATION", b"OCTET-STREAM", None]
        if n.message is not None:
            inner = n.message
            body = _crlf(n.entity.body)
            out[7:7] = [envelope(_header_message(inner.entity.header, "text/plain")), one(inner), _lines(body)]
        return out

    return one(bounded.walk(raw))


def analyse_full(raw: bytes) -> tuple[Nested, Nested]:
    """(envelope, bodystructure) of a raw RFC 5322 message by this module's own paths (the
    email package's parse for what mime/lean.py does not take); never raises."""
    try:
        header, body = _split_header_body(raw)
        fields = _fast_fields(header)
        if fields is not None:
            structure = _lean_structure(fields, body)
            if structure is not None:
                return _envelope_of(fields), structure
        head = _HEADER_PARSER.parsebytes(header)  # the header alone: the body need not be scanned
        maintype = head.get_content_maintype()
        if maintype in ("multipart", "message") and bounded.needed(raw):
            return envelope(head), _bounded_structure(raw)
        if maintype in ("multipart", "message") or (b"\n\n" not in raw and b"\r\n\r\n" not in raw):
            msg = _PARSER.parsebytes(raw)
            return envelope(msg), bodystructure(msg)
        return envelope(head), _single_part_structure(head, body)
    except Exception:  # pragma: no cover - the parser is lenient; this is the last guard
        return [None] * 10, [
            b"TEXT",
            b"PLAIN",
            [b"CHARSET", b"US-ASCII"],
            None,
            None,
            b"7BIT",
            len(raw),
            _lines(raw),
            None,
            None,
            None,
            None,
        ]
