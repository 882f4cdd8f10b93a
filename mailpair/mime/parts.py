"""A MIME entity in raw bytes: its header and body split at the blank line, its Content-Type
read the way RFC 2045/2046/5322 say (fields unfolded; a part without Content-Type is text/plain,
or message/rfc822 inside multipart/digest), and a multipart body cut at its boundaries. Pure
functions over bytes, used by IMAP's body sections and by the binary-part encoder; nothing here
copies or rewrites the bytes it is given.
"""

from __future__ import annotations

import email.parser
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailpair.mime.headers import POLICY

# Unfolds field values as they are read (RFC 5322 2.2.3), so a folded boundary parameter is found.
_HEADERS = email.parser.BytesHeaderParser(policy=POLICY)


@dataclass(slots=True)
class Entity:
    header: bytes  # includes the blank line that ends it (b"" when there is none)
    body: bytes
    # The type of a part without Content-Type: message/rfc822 inside multipart/digest, else
    # text/plain (RFC 2046 5.1.5).
    default: str = "text/plain"

    def content_type(self) -> tuple[str, dict[str, str]]:
        if self.header in (b"", b"\r\n", b"\n"):  # no fields: the default, without a parser
            return self.default, {}
        msg = _HEADERS.parsebytes(self.header)
        msg.set_default_type(self.default)
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


def multipart_spans(body: bytes, boundary: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each part of a multipart body, lazily, in order (RFC 2046 5.1.1: the CRLF
    before a delimiter belongs to the delimiter; without a close delimiter the last part runs
    to the end)."""
    b = re.escape(boundary.encode("utf-8", "surrogateescape"))
    delim = re.compile(rb"(?:\A|\r?\n)--" + b + rb"(--)?[ \t]*(?=\r?\n|\Z)\r?\n?")
    prev_end = None
    for m in delim.finditer(body):
        if prev_end is not None:
            yield prev_end, m.start()
        if m.group(1):
            return
        prev_end = m.end()
    if prev_end is not None:
        yield prev_end, len(body)


def multipart_end(body: bytes, boundary: str, start: int) -> int:
    """Where the last part ends: at the close delimiter after start, or at the end of body."""
    b = re.escape(boundary.encode("utf-8", "surrogateescape"))
    m = re.compile(rb"\r?\n--" + b + rb"--[ \t]*(?=\r?\n|\Z)").search(body, start)
    return m.start() if m else len(body)


def multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    return [body[a:b] for a, b in multipart_spans(body, boundary)]
