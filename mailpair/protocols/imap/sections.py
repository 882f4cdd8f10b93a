"""Body sections (RFC 9051 6.4.5): finding part 1.2.3, HEADER, HEADER.FIELDS, TEXT and MIME in a
message's raw bytes, and decoding parts for BINARY. Works on the bytes as stored, so what a
client fetches is byte for byte what was delivered."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass

from mailpair.mime import bounded
from mailpair.mime.parts import Entity, multipart_parts, split


class NoSuchPart(Exception):
    pass


class UnknownEncoding(Exception):
    pass


__all__ = [
    "Entity",
    "NoSuchPart",
    "UnknownEncoding",
    "binary",
    "binary_window",
    "find",
    "multipart_parts",
    "section",
    "section_window",
    "split",
]


def find(raw: bytes, path: list[int]) -> tuple[Entity, bool]:
    """The entity at a part path (header = its MIME header) and whether it is message/rfc822.
    The top-level message is path []."""
    if path and bounded.needed(raw):  # past the analysis limits: the same walk as BODYSTRUCTURE
        return bounded.find(raw, path, NoSuchPart)
    span, is_message = _find_span(raw, path)
    return Entity(raw[span.start : span.body], raw[span.body : span.end], span.default), is_message


@dataclass(slots=True)
class _Span:
    """An entity as offsets into the message: header raw[start:body], body raw[body:end]."""

    start: int
    body: int
    end: int
    default: str = "text/plain"

    def entity(self, raw: bytes) -> Entity:
        """Its header, for Content-Type (the body is not needed, so not copied)."""
        return Entity(raw[self.start : self.body], b"", self.default)


def _split_span(raw: bytes, start: int, end: int) -> _Span:
    """mime.parts.split(raw[start:end]) as offsets, copying nothing."""
    if raw.startswith(b"\r\n", start, end):
        return _Span(start, start + 2, end)
    if raw.startswith(b"\n", start, end):
        return _Span(start, start + 1, end)
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep, start, end)
        if i >= 0:
            return _Span(start, i + len(sep), end)
    return _Span(start, end, end)


def _find_span(raw: bytes, path: list[int]) -> tuple[_Span, bool]:
    """find() over offsets: the same walk, but a large message is never copied part by part
    (a 25 MiB attachment would otherwise be copied three times on the way to it)."""
    span = _split_span(raw, 0, len(raw))
    is_message = True
    for k in path:
        ctype, params = span.entity(raw).content_type()
        if is_message is False and ctype == "message/rfc822":
            span = _split_span(raw, span.body, span.end)  # into the enclosed message
            ctype, params = span.entity(raw).content_type()
        if ctype.startswith("multipart/") and params.get("boundary"):
            parts = multipart_spans_in(raw, span.body, span.end, params["boundary"])
            if not 1 <= k <= len(parts):
                raise NoSuchPart(f"no part {k}")
            span = _split_span(raw, *parts[k - 1])
            if ctype == "multipart/digest":
                span.default = "message/rfc822"
            is_message = False
        elif k == 1:
            # A single-part message's part 1 is its body; its MIME header is the message header.
            is_message = False
        else:
            raise NoSuchPart(f"no part {k}")
    return span, is_message


def multipart_spans_in(raw: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """mime.parts.multipart_spans(raw[start:end], boundary) as offsets into raw, found with
    bytes.find (memchr speed) rather than a regex tried at every byte of the body: a delimiter
    holds "--boundary", and a match of that regex starts at most two bytes before it (its CR LF),
    so only those places are tried, each with the same regex (leftmost first, as finditer)."""
    b = boundary.encode("utf-8", "surrogateescape")
    delim = re.compile(rb"(?:\A|\r?\n)--" + re.escape(b) + rb"(--)?[ \t]*(?=\r?\n|\Z)\r?\n?")
    # The \A branch, for the body's first byte (\A does not match at a pos given to match()).
    first = re.compile(rb"--" + re.escape(b) + rb"(--)?[ \t]*(?=\r?\n|\Z)\r?\n?")
    needle = b"--" + b
    spans: list[tuple[int, int]] = []
    prev_end: int | None = None
    pos = start
    while True:
        c = raw.find(needle, pos, end)
        if c < 0:
            break
        m = None
        for at in (c - 2, c - 1, c):
            if at < pos:
                continue
            m = (first.match(raw, at, end) if at == start else None) or delim.match(raw, at, end)
            if m:
                break
        if m is None:
            pos = c + 1
            continue
        if prev_end is not None:
            spans.append((prev_end, m.start()))
        if m.group(1):
            return spans
        prev_end = pos = m.end()  # past the needle: a match always holds it
    if prev_end is not None:
        spans.append((prev_end, end))
    return spans


def header_fields(header: bytes, wanted: list[bytes], exclude: bool) -> bytes:
    """The named fields (or all but them) of a header, in order, ending with the blank line."""
    names = {w.lower() for w in wanted}
    out = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = (name in names) != exclude
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


Window = tuple[bytes, int, int]  # (buffer, start, stop): the bytes buffer[start:stop], not yet copied


def section(raw: bytes, path: list[int], spec: str, fields: list[bytes]) -> bytes:
    """The bytes of BODY[path.spec]; spec is "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT
    or MIME."""
    return _bytes(section_window(raw, path, spec, fields))


def binary(raw: bytes, path: list[int]) -> bytes:
    """BINARY[path]: the part's content with its transfer encoding undone."""
    return _bytes(binary_window(raw, path))


def _bytes(w: Window) -> bytes:
    buf, start, stop = w
    return buf if start == 0 and stop == len(buf) else buf[start:stop]


def section_window(raw: bytes, path: list[int], spec: str, fields: list[bytes]) -> Window:
    """section() as a window: most sections are a stretch of the message itself, so FETCH can
    send (or slice a partial of) them without copying the part first."""
    if not path and not spec:
        return raw, 0, len(raw)
    if path and bounded.needed(raw):  # past the analysis limits: the same walk as BODYSTRUCTURE
        data = _section_of(*bounded.find(raw, path, NoSuchPart), path, spec, fields)
        return data, 0, len(data)
    span, is_message = _find_span(raw, path)
    if spec == "MIME":
        if not path:
            raise NoSuchPart("MIME needs a part number")
        return raw, span.start, span.body
    if spec == "":
        return raw, span.body, span.end
    if not is_message:
        ctype, _ = span.entity(raw).content_type()
        if ctype != "message/rfc822":
            raise NoSuchPart(f"part {'.'.join(map(str, path))} is not a message")
        span = _split_span(raw, span.body, span.end)
    if spec == "HEADER":
        return raw, span.start, span.body
    if spec == "TEXT":
        return raw, span.body, span.end
    if spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        data = header_fields(raw[span.start : span.body], fields, spec == "HEADER.FIELDS.NOT")
        return data, 0, len(data)
    raise NoSuchPart(f"unknown section {spec}")


def _section_of(entity: Entity, is_message: bool, path: list[int], spec: str, fields: list[bytes]) -> bytes:
    """section() of the entity find() gave (the bounded walk's)."""
    if spec == "MIME":
        if not path:
            raise NoSuchPart("MIME needs a part number")
        return entity.header
    if spec == "":
        return entity.body
    if not is_message:
        ctype, _ = entity.content_type()
        if ctype != "message/rfc822":
            raise NoSuchPart(f"part {'.'.join(map(str, path))} is not a message")
        entity = split(entity.body)
    if spec == "HEADER":
        return entity.header
    if spec == "TEXT":
        return entity.body
    if spec == "HEADER.FIELDS":
        return header_fields(entity.header, fields, False)
    if spec == "HEADER.FIELDS.NOT":
        return header_fields(entity.header, fields, True)
    raise NoSuchPart(f"unknown section {spec}")


def binary_window(raw: bytes, path: list[int]) -> Window:
    """binary() as a window: a part with no transfer encoding is a stretch of the message, and
    a base64 one is decoded from a view of it (no copy of the encoded part)."""
    if not path:
        return raw, 0, len(raw)
    if bounded.needed(raw):
        entity, _ = bounded.find(raw, path, NoSuchPart)
        data = _decode(entity.encoding(), entity.body)
        return data, 0, len(data)
    span, _ = _find_span(raw, path)
    enc = span.entity(raw).encoding()
    if enc in ("7bit", "8bit", "binary", ""):
        return raw, span.body, span.end
    data = _decode(enc, memoryview(raw)[span.body : span.end])
    return data, 0, len(data)


def _decode(enc: str, body: bytes | memoryview) -> bytes:
    if enc in ("7bit", "8bit", "binary", ""):
        return bytes(body)
    if enc == "base64":
        return _base64(body)
    if enc == "quoted-printable":
        return quopri.decodestring(bytes(body))
    raise UnknownEncoding(f"unknown transfer encoding {enc}")


def _base64(body: bytes | memoryview) -> bytes:
    """Base64 decoded leniently: characters outside the alphabet skipped, missing padding
    supplied. binascii skips those characters by itself, so a body that ends on a whole quantum
    decodes as it is, with no cleaned copy (a 25 MiB part would need two); only one that does
    not takes the slower way, which gives the same bytes for every other body."""
    try:
        return binascii.a2b_base64(body)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", bytes(body)) + b"==")
    except (binascii.Error, ValueError):
        raise UnknownEncoding("part has broken base64") from None
