"""Binary content arriving by APPEND with literal8 (RFC 3516 / RFC 9051 BINARY): parts whose
content holds NUL are stored base64-encoded, so every FETCH BODY[...] is valid IMAP.

RFC 9051 4.3: unencoded binary strings are not permitted in a response except in a literal8
answering FETCH BINARY[...]; RFC 3516 4.3 lets a server store binary parts of an APPENDed message
in a content-transfer-encoding of its choice. So a leaf part whose body holds NUL has its body
replaced by base64 and its Content-Transfer-Encoding set to base64 before the message is stored:
BODY[n] then returns the base64 text (the stored encoding) and BINARY[n] decodes it back to the
exact bytes the client appended.

Rules kept: only leaf part bodies holding NUL change, every other byte (headers, boundaries,
preambles, other parts) is kept as it came; never raises (input it cannot walk is returned as
is, and the FETCH side still never puts NUL in an ordinary literal).
"""

from __future__ import annotations

import base64
import re

from mailpair.mime.parts import Entity, multipart_parts, split

_CTE = re.compile(rb"(?im)^content-transfer-encoding:[^\n]*\n(?:[ \t][^\n]*\n)*")
MAX_DEPTH = 100


def _b64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    # No CRLF after the last line: the one before the next boundary belongs to the delimiter.
    return b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _reencode(header: bytes, body: bytes) -> tuple[bytes, bytes]:
    """The header with Content-Transfer-Encoding: base64 (replacing any other) and the body in
    base64. header ends with its blank line (or is empty, for a part without fields)."""
    fields = _CTE.sub(b"", header)
    if fields.endswith(b"\r\n\r\n"):
        fields = fields[:-2]
    elif fields.endswith(b"\n\n"):
        fields = fields[:-1]
    elif fields in (b"\r\n", b"\n", b""):
        fields = b""
    return fields + b"Content-Transfer-Encoding: base64\r\n\r\n", _b64_lines(body)


def encode_nul_parts(raw: bytes) -> bytes:
    """raw with every leaf part whose body holds NUL stored in base64 (see the module header)."""
    if b"\0" not in raw:
        return raw
    try:
        return _walk(raw, "text/plain", 0)
    except (RecursionError, ValueError):
        return raw


def _walk(raw: bytes, default: str, depth: int) -> bytes:
    if b"\0" not in raw or depth > MAX_DEPTH:
        return raw
    entity: Entity = split(raw)
    entity.default = default
    ctype, params = entity.content_type()
    if ctype.startswith("multipart/") and params.get("boundary"):
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        body = entity.body
        out = bytearray()
        pos = 0
        for part in multipart_parts(body, params["boundary"]):
            start = body.find(part, pos) if part else pos
            if start < 0:  # pragma: no cover - parts are slices of body, in order
                return raw
            out += body[pos:start]
            out += _walk(part, child_default, depth + 1)
            pos = start + len(part)
        out += body[pos:]
        return entity.header + bytes(out)
    if ctype == "message/rfc822" and depth > 0:
        return entity.header + _walk(entity.body, "text/plain", depth + 1)
    if b"\0" not in entity.body or b"\0" in entity.header:
        return raw
    header, body = _reencode(entity.header, entity.body)
    return header + body
