"""Body sections (RFC 9051 6.4.5): finding part 1.2.3, HEADER, HEADER.FIELDS, TEXT and MIME in a
message's raw bytes, and decoding parts for BINARY. Works on the bytes as stored, so what a
client fetches is byte for byte what was delivered."""

from __future__ import annotations

import base64
import binascii
import quopri
import re

from mailpair.mime import bounded
from mailpair.mime.parts import Entity, multipart_parts, split


class NoSuchPart(Exception):
    pass


class UnknownEncoding(Exception):
    pass


__all__ = ["Entity", "NoSuchPart", "UnknownEncoding", "binary", "find", "multipart_parts", "section", "split"]


def find(raw: bytes, path: list[int]) -> tuple[Entity, bool]:
    """The entity at a part path (header = its MIME header) and whether it is message/rfc822.
    The top-level message is path []."""
    if path and bounded.needed(raw):  # past the analysis limits: the same walk as BODYSTRUCTURE
        return bounded.find(raw, path, NoSuchPart)
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
            if ctype == "multipart/digest":
                entity.default = "message/rfc822"
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
