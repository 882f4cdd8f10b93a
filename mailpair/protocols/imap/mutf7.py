"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3), both ways."""

from __future__ import annotations

import base64


class BadName(ValueError):
    pass


def _b64enc(s: str) -> str:
    return base64.b64encode(s.encode("utf-16-be")).decode().rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.append("&" + _b64enc("".join(pending)) + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise BadName("mailbox name has a character that modified UTF-7 does not allow")
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise BadName("unterminated &...- sequence in mailbox name")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            try:
                raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4), validate=True)
                text = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise BadName("bad modified UTF-7 in mailbox name") from None
            if encode(text) != "&" + chunk + "-":
                raise BadName("modified UTF-7 in mailbox name is not in canonical form")
            out.append(text)
        i = end + 1
    return "".join(out)
