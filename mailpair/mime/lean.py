"""ENVELOPE and BODYSTRUCTURE of a multipart (or message/rfc822) message without the email
package's full parse: the structure is found by working over the raw bytes with offsets, and only
each part's header goes through the email package.

Why it exists: the full parse decodes the whole message to str and splits it into lines and part
payloads, about nine copies of a message in memory at once (218 MiB for a 25 MiB message with an
attachment). Here a part's body is never copied: delimiters are found with bytes.find, sizes and
line counts come from offsets and bytes.count, so a large message costs a small fraction of its
own size on top of itself.

Rules this module keeps:
- The result is exactly what structure.py's email-package path (`bodystructure(_PARSER.parsebytes
  (raw))`) gives. Headers are parsed by the same header parser and described by the same helpers
  (so unfolding, RFC 2231 parameters and encoded words are the email package's); only the
  splitting into parts and the measuring of bodies is done here, following the feed parser's
  rules, which are RFC 2046's: a delimiter is a line `--boundary`, optionally `--` (the close
  delimiter), then transport padding (spaces, tabs); the CRLF before a delimiter belongs to it;
  text before the first delimiter is the preamble, after the close delimiter the epilogue; a line
  that matches an enclosing multipart's boundary ends every part inside it.
- When the message is anything this module is not sure of, `analyse_lean` returns None and the
  caller takes the email-package path, so a result never gets worse, only cheaper: a line end
  that is not CRLF, a part without the blank line after its header or with a header the feed
  parser could split differently, no boundary or no delimiter, a missing close delimiter, two
  delimiters in a row, message/* other than rfc822, nesting deeper than MAX_DEPTH, an 8-bit body
  over EIGHT_BIT_EXACT (see _Scan.measure) or any unexpected error.
- More than MAX_PARTS parts is capped as Dovecot caps it, not handed to the email package: the
  MAX_PARTS-th part (the message itself is the first) is the last one and runs to the end of the
  message as one opaque leaf (APPLICATION/OCTET-STREAM if it was composite), and a message/rfc822
  holding it is measured in octets to the end. The email package builds a Message per part: a
  7 MiB message of 200,000 tiny parts took it 9 s and 167 MiB, and its BODYSTRUCTURE (9 MiB,
  larger than the message) would go into the log record and every FETCH; capped, 0.4 s and
  0.5 MiB. No real mail comes near the cap. Only here do the two paths differ on purpose.
- An 8-bit leaf body is reported as the email package reports it (decoded with its charset and
  re-encoded, not its octet count): emulated exactly by the same helper on a copy of that body.
- message/rfc822 sizes are what the email package reports today: the length of the enclosed
  message as its generator would write it out again (headers refolded at 78 columns, delimiters
  without padding, preamble and epilogue as parsed), computed from header folds and offsets
  without writing it out. That is not always the octet count on the wire; see _flat.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from mailpair.mime.structure import (
    _CLEAN_BLOCK,
    _CRLF,
    _HEADER_PARSER,
    Nested,
    _b,
    _disposition,
    _encoding_of,
    _headers,
    _language,
    _lines,
    _params,
    _part_body_bytes,
    _raw_header,
    basic_fields,
    envelope,
)

MAX_DEPTH = 100  # nested multipart and message/rfc822 levels (Dovecot's default)
MAX_PARTS = 10_000  # parts in a message, the top-level one included (Dovecot's default)
EIGHT_BIT_EXACT = 1024 * 1024  # an 8-bit leaf up to this size is measured the email package's way

# Only a header that says multipart/* or message/* is worth a look; anything else (most mail) is
# left to structure.py's own single-part paths at the cost of one search over the header.
_COMPOSITE = re.compile(rb"^content-type:[ \t]*(?:\r\n[ \t]+)*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)
# What may follow `--boundary` on a delimiter line: `--` for the close delimiter, transport
# padding, then the line end (or the end of the message: the feed parser accepts a last line
# without one).
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\Z)")
_ASCII_CHUNK = 256 * 1024  # an 8-bit search copies this much at a time (see _Scan.has_8bit)

LEAF, MULTIPART, MESSAGE, OVERFLOW = "leaf", "multipart", "message", "overflow"


class Unsure(Exception):
    """The lean path is not sure it would give the email package's answer."""


@dataclass(slots=True)
class Part:
    """One entity as the feed parser would build it, with offsets instead of payloads.

    body_start..body_end is the payload of a leaf as the feed parser keeps it (the CRLF before the
    next delimiter already cut); for a multipart, preamble and epilogue are (length, newlines) of
    those texts as parsed, or None when the parser keeps None."""

    msg: Message  # the header alone, parsed by the email package
    kind: str
    body_start: int
    body_end: int
    children: list[Part] = field(default_factory=list)  # multipart: the parts; message: [inner]
    boundary: bytes = b""
    preamble: tuple[int, int] | None = None
    epilogue: tuple[int, int, bool] | None = None  # length, newlines, ends with a newline
    overflow_inside: bool = False  # the capped part is in this subtree: no generator size


class _Scan:
    """One pass over a message: finds the parts, counts them against MAX_PARTS."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.count = 0
        self.capped = False
        self.ascii = raw.isascii()
        self.flats: dict[tuple[int, int], tuple[int, int, bool]] = {}  # see _flat

    def entity(self, start: int, end: int, strip: bool, depth: int, default_type: str | None) -> Part:
        """The entity whose lines are start..end (end: the message's end or the start of a line
        that matches an enclosing boundary). strip: the entity is inside a multipart, so the feed
        parser cuts the line end before the next delimiter from its last payload (a leaf's body,
        a multipart's epilogue, through any message/rfc822 levels)."""
        raw = self.raw
        if start >= end:
            raise Unsure("an empty part")
        if raw.startswith(b"\r\n", start):
            header_end = start + 2  # no header, just the blank line
        else:
            blank = raw.find(b"\r\n\r\n", start, end)
            if blank < 0:
                raise Unsure("a part without the blank line after its header")
            header_end = blank + 4
        block = raw[start:header_end]
        # The feed parser ends a header at the first line that is not a field or continuation;
        # only a block of clean fields is sure to end exactly at our blank line.
        if _CLEAN_BLOCK.fullmatch(block.decode("ascii", "surrogateescape")) is None:
            raise Unsure("a header the feed parser may split elsewhere")
        msg = _HEADER_PARSER.parsebytes(block)
        if default_type is not None:
            msg.set_default_type(default_type)
        self.count += 1
        if self.count >= MAX_PARTS:
            self.capped = True  # this part is the last: it runs to the end of the message
            return Part(msg, OVERFLOW, header_end, len(raw), overflow_inside=True)
        maintype = msg.get_content_maintype()
        if maintype == "multipart":
            if depth >= MAX_DEPTH:
                raise Unsure("nested too deep")
            return self.multipart(msg, header_end, end, strip, depth + 1)
        if maintype == "message":
            if msg.get_content_type() != "message/rfc822":
                raise Unsure("message/* other than rfc822")  # the feed parser has its own rules
            if depth >= MAX_DEPTH:
                raise Unsure("nested too deep")
            inner = self.entity(header_end, end, strip, depth + 1, None)
            return Part(msg, MESSAGE, header_end, end, [inner], overflow_inside=inner.overflow_inside)
        body_end = end - 2 if strip and end > header_end else end
        return Part(msg, LEAF, header_end, body_end)

    def multipart(self, msg: Message, body_start: int, end: int, strip: bool, depth: int) -> Part:
        boundary = msg.get_boundary()
        if not boundary or not boundary.isascii() or "\r" in boundary or "\n" in boundary:
            # none: the feed parser keeps the body as text; a line break inside one (a folded
            # quoted string) can never match a line, where a search over bytes could
            raise Unsure("no boundary, or one the bytes search would read differently")
        raw = self.raw
        dash = b"--" + boundary.encode("ascii")
        delimiters = self.delimiters(dash, body_start, end)
        first = next(delimiters, None)
        if first is None or first[2]:
            raise Unsure("no opening delimiter")
        part = Part(msg, MULTIPART, body_start, end, boundary=boundary.encode("ascii"))
        if first[0] > body_start:
            # The preamble's last line end belongs to the delimiter; the generator writes it back.
            part.preamble = (first[0] - 2 - body_start, raw.count(b"\n", body_start, first[0] - 2))
        line_end = first[1]
        # The feed parser gives a digest's parts message/rfc822 as their default type.
        default_type = "message/rfc822" if msg.get_content_type() == "multipart/digest" else None
        for start, next_end, close in delimiters:
            if start == line_end:
                raise Unsure("two delimiters in a row")  # the feed parser merges them
            child = self.entity(line_end, start, True, depth, default_type)
            part.children.append(child)
            if self.capped:
                part.overflow_inside = True
                return part
            line_end = next_end
            if close:
                break
        else:
            raise Unsure("no close delimiter")
        # Everything after the close delimiter is the epilogue; inside a multipart the line end
        # before the next delimiter is cut from it, and an empty one is kept as None.
        epilogue_end = end
        if strip:
            if line_end == end:
                return part
            epilogue_end = end - 2
        length = epilogue_end - line_end
        ends_newline = length > 0 and raw[epilogue_end - 1] == 0x0A
        part.epilogue = (length, raw.count(b"\n", line_end, epilogue_end), ends_newline)
        return part

    def delimiters(self, dash: bytes, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """(line start, line end, is close) of each delimiter line in start..end, in order."""
        raw = self.raw
        pattern = b"\r\n" + dash
        if raw.startswith(dash, start, end):
            line_start = start
        else:
            at = raw.find(pattern, start, end)
            line_start = at + 2 if at >= 0 else -1
        while line_start >= 0:
            tail = _DELIMITER_TAIL.match(raw, line_start + len(dash))
            if tail is not None:  # else `--boundary` is only the start of a longer word
                yield line_start, tail.end(), tail.group(1) is not None
            at = raw.find(pattern, line_start, end)
            line_start = at + 2 if at >= 0 else -1

    def measure(self, part: Part, lines: bool) -> tuple[int, int]:
        """(size, lines) of a leaf's body as structure.bodystructure reports them; lines only
        when asked for (text), as counting them is most of the time a large attachment costs."""
        raw = self.raw
        start, end = part.body_start, part.body_end
        if not self.ascii and self.has_8bit(start, end):
            # The email package hands an 8-bit body out decoded with its charset and re-encoded
            # (get_payload(decode=False)), so its size is not the octet count; the same helper
            # on a copy of the body gives the same figure, for a body small enough to copy.
            if end - start > EIGHT_BIT_EXACT:
                raise Unsure("a large 8-bit body")
            part.msg.set_payload(raw[start:end].decode("ascii", "surrogateescape"))
            try:
                body = _part_body_bytes(part.msg)
            finally:
                part.msg.set_payload("")
            return len(body), _lines(body)
        # CRLF line ends only (checked for the whole message), so the body is already in the
        # CRLF form IMAP counts.
        return self.octets(start, end, lines)

    def has_8bit(self, start: int, end: int) -> bool:
        """Whether start..end holds a byte over 127. bytes.isascii over small copies: fifty times
        faster than a regular expression over the range, and the copies stay small."""
        raw = self.raw
        return any(not raw[at : min(end, at + _ASCII_CHUNK)].isascii() for at in range(start, end, _ASCII_CHUNK))

    def octets(self, start: int, end: int, lines: bool) -> tuple[int, int]:
        """(size, lines) of start..end as they are on the wire."""
        if end <= start:
            return 0, 0
        if not lines:
            return end - start, 0
        return end - start, self.raw.count(b"\n", start, end) + (0 if self.raw[end - 1] == 0x0A else 1)


def _fold_size(msg: Message, max_line_length: int) -> tuple[int, int]:
    """(length, newlines) of a header block as the generator writes it, blank line included."""
    policy = _CRLF if max_line_length == _CRLF.max_line_length else _CRLF.clone(max_line_length=max_line_length)
    length, newlines = 2, 1
    for name, value in msg.raw_items():
        folded = policy.fold_binary(name, value)
        length += len(folded)
        newlines += folded.count(b"\n")
    return length, newlines


def _flat(scan: _Scan, part: Part, max_line_length: int = _CRLF.max_line_length) -> tuple[int, int, bool]:
    """(length, newlines, ends with a newline) of the entity as email.generator.BytesGenerator
    with CRLF line ends writes it: what structure.py measures for a message/rfc822 part. Headers
    are refolded (no refolding under multipart/signed), a multipart is its preamble, delimiters
    without padding, its parts and its epilogue; a body is written as parsed."""
    # Each message/rfc822 level measures everything inside it again; kept per part and policy so
    # deep nesting costs each header's folding once (twice under multipart/signed), not per level.
    key = (id(part), max_line_length)
    known = scan.flats.get(key)
    if known is not None:
        return known
    raw = scan.raw
    length, newlines = _fold_size(part.msg, max_line_length)
    ends = True
    if part.kind == LEAF:
        size = part.body_end - part.body_start
        if size:
            length += size
            newlines += raw.count(b"\n", part.body_start, part.body_end)
            ends = raw[part.body_end - 1] == 0x0A
    elif part.kind == MESSAGE:
        inner = _flat(scan, part.children[0], max_line_length)
        length += inner[0]
        newlines += inner[1]
        ends = inner[2] if inner[0] else ends
    else:
        inner_max = 0 if part.msg.get_content_type() == "multipart/signed" else max_line_length
        n = len(part.children)
        dash = len(part.boundary) + 2
        if part.preamble is not None:
            length += part.preamble[0] + 2
            newlines += part.preamble[1] + 1
        # --b CRLF, then CRLF --b CRLF between parts, then CRLF --b-- CRLF
        length += (dash + 2) + (n - 1) * (dash + 4) + (dash + 6)
        newlines += 1 + 2 * (n - 1) + 2
        for child in part.children:
            flat = _flat(scan, child, inner_max)
            length += flat[0]
            newlines += flat[1]
        if part.epilogue is not None and part.epilogue[0]:
            length += part.epilogue[0]
            newlines += part.epilogue[1]
            ends = part.epilogue[2]
    scan.flats[key] = length, newlines, ends
    return length, newlines, ends


def _structure(scan: _Scan, part: Part) -> Nested:
    """structure.bodystructure(msg) for the entity, line for line, with bodies measured from
    offsets."""
    msg = part.msg
    ctype = msg.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    if part.kind == MULTIPART:
        return [
            [_structure(scan, child) for child in part.children],
            _b(subtype.upper()),
            _params(msg, "content-type"),
            _disposition(msg),
            _language(msg),
            _raw_header(_headers(msg), "content-location"),
        ]
    h = _headers(msg)
    params = _params(msg, "content-type")
    if part.kind == OVERFLOW:
        if maintype in ("multipart", "message"):
            # The capped part is described as opaque data: a MULTIPART or MESSAGE/RFC822 body
            # would owe the client parts or an envelope that were never looked for.
            maintype, subtype, params = "application", "octet-stream", None
        # Our own description, not the email package's: the octets to the end of the message.
        size, lines = scan.octets(part.body_start, part.body_end, maintype == "text")
    elif part.kind == MESSAGE:
        inner = part.children[0]
        if inner.overflow_inside:  # it runs to the end of the message, as the capped part does
            size, lines = scan.octets(part.body_start, len(scan.raw), True)
        else:
            size, newlines, ends = _flat(scan, inner)
            lines = newlines + (0 if ends else 1) if size else 0
    else:
        size, lines = scan.measure(part, maintype == "text")
    out = basic_fields(maintype, subtype, params, h, _encoding_of(msg.get("Content-Transfer-Encoding")), size)
    if part.kind == MESSAGE:
        inner = part.children[0]
        out += [envelope(inner.msg), _structure(scan, inner), lines]
    elif maintype == "text":
        out.append(lines)
    out += [_raw_header(h, "content-md5"), _disposition(msg), _language(msg), _raw_header(h, "content-location")]
    return out


def analyse_lean(raw: bytes) -> tuple[Nested, Nested] | None:
    """(envelope, bodystructure) of a multipart or message/rfc822 message, or None when the
    message is not one or is anything this module is not sure of (the caller then parses it
    with the email package)."""
    header_end = raw.find(b"\r\n\r\n")
    if header_end < 0 or raw.startswith(b"\r\n") or _COMPOSITE.search(raw, 0, header_end + 2) is None:
        return None
    # Every line end CRLF: the feed parser also ends lines at a bare CR or LF, which offsets
    # over CRLF-delimited lines would not see.
    newlines = raw.count(b"\n")
    if raw.count(b"\r") != newlines or raw.count(b"\r\n") != newlines:
        return None
    scan = _Scan(raw)
    try:
        top = scan.entity(0, len(raw), False, 0, None)
        if top.kind not in (MULTIPART, MESSAGE):
            return None
        return envelope(top.msg), _structure(scan, top)
    except Exception:  # Unsure, or anything unforeseen: the email package decides, as before
        return None
