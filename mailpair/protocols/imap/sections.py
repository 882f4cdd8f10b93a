"""Body sections (RFC 9051 6.4.5): finding part 1.2.3, HEADER, HEADER.FIELDS, TEXT and MIME in a
message's raw bytes, and decoding parts for BINARY. Works on the bytes as stored, so what a
client fetches is byte for byte what was delivered."""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


class NoSuchPart(Exception):
    pass


class UnknownEncoding(Exception):
    pass


@dataclass(slots=True)
class Entity:
    header: bytes  # includes the blank line that ends it (b"" when there is none)
    body: bytes

    def content_type(self) -> tuple[str, dict[str, str]]:
        msg = _HEADERS.parsebytes(self.header)
        params = {}
        try:
            for k, v in msg.get_params(header="content-type")[1:] if msg.get_params() else []:
                params[k.lower()] = email.utils.collapse_rfc2231_value(v) if isinstance(v, tuple) else str(v)
        except Exception:
            params = {}
        return msg.get_content_type(), params

    def encoding(self) -> str:
        msg = _HEADERS.parsebytes(self.header)
        return str(msg.get("Content-Transfer-Encoding", "7bit")).strip().lower()


def split(raw: bytes) -> Entity:
    if raw.startswith(b"\r\n"):
        return Entity(b"\r\n", raw[2:])
    if raw.startswith(b"\n"):
        return Entity(b"\n", raw[1:])
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return Entity(raw[: i + len(sep)], raw[i + len(sep) :])
    return Entity(raw, b"")


def multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    b = re.escape(boundary.encode("utf-8", "surrogateescape"))
    delim = re.compile(rb"(?:\A|\r?\n)--" + b + rb"(--)?[ \t]*(?=\r?\n|\Z)\r?\n?")
    parts = []
    prev_end = None
    for m in delim.finditer(body):
        if prev_end is not None:
            parts.append(body[prev_end : m.start()])
        if m.group(1):
            prev_end = None
            break
        prev_end = m.end()
    if prev_end is not None:  # no close delimiter: the last part runs to the end
        parts.append(body[prev_end:])
    return parts


def find(raw: bytes, path: list[int]) -> tuple[Entity, bool]:
    """The entity at a part path (header = its MIME header) and whether it is message/rfc822.
    The top-level message is path []."""
    entity = split(raw)
    is_message = True
    for k in path:
        ctype, params = entity.content_type()
        if is_message is False and ctype == "message/rfc822":
            entity = split(entity.body)  # into the enclosed message
            ctype, params = entity.content_type()
        if ctype.startswith("multipart/") and params.get("boundary"):
            parts = multipart_parts(entity.body, params["boundary"])
            if not 1 <= k <= len(parts):
                raise NoSuchPart(f"no part {k}")
            entity = split(parts[k - 1])
            is_message = False
        elif k == 1:
            # A single-part message's part 1 is its body; its MIME header is the message header.
            is_message = False
        else:
            raise NoSuchPart(f"no part {k}")
    return entity, is_message


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


def section(raw: bytes, path: list[int], spec: str, fields: list[bytes]) -> bytes:
    """The bytes of BODY[path.spec]; spec is "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT
    or MIME."""
    if not path and not spec:
        return raw
    entity, is_message = find(raw, path)
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


def binary(raw: bytes, path: list[int]) -> bytes:
    """BINARY[path]: the part's content with its transfer encoding undone."""
    if not path:
        return raw
    entity, _ = find(raw, path)
    enc = entity.encoding()
    if enc in ("7bit", "8bit", "binary", ""):
        return entity.body
    if enc == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", entity.body) + b"==")
        except (binascii.Error, ValueError):
            raise UnknownEncoding("part has broken base64") from None
    if enc == "quoted-printable":
        return quopri.decodestring(entity.body)
    raise UnknownEncoding(f"unknown transfer encoding {enc}")
