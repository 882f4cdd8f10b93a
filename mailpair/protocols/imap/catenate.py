"""CATENATE (RFC 4469): an APPENDed message assembled from literal text and parts of messages
already stored, named by IMAP URLs (RFC 5092).

A URL names a message by mailbox, UIDVALIDITY and UID, optionally a section (as in BODY[...])
and a partial range: `/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1.MIME/;PARTIAL=0.1024`, relative
to this server, or the same path after `imap://[user@]host[:port]`. Only the session's own
mailboxes are reachable (the user in an absolute URL, when given, must be the session's).

Rules kept: a URL that does not parse, names another user, a mailbox or message that does not
exist, a UIDVALIDITY that changed, or a section the message lacks gives NO [BADURL url] and
nothing is appended (RFC 4469 5); the assembled message is held to the APPEND size limit
(NO [TOOBIG]).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from mailpair.protocols.imap import fetch as fetchmod
from mailpair.protocols.imap import mutf7, reads, sections
from mailpair.protocols.imap.args import Atom, Literal, ParseError, as_astring
from mailpair.protocols.imap.session import Bad, No, Session

_ABSOLUTE = re.compile(r"^imap://(?:([^@/;]*)(?:;[^@/]*)?@)?[^/]+(/.*)$", re.I)
_PATH = re.compile(
    r"^/([^;]+);UIDVALIDITY=(\d{1,10})/;UID=(\d{1,10})(?:/;SECTION=([^/]+))?(?:/;PARTIAL=(\d{1,10})(?:\.(\d{1,10}))?)?$",
    re.I,
)


def _bad(url: str, why: str) -> No:
    return No(f"{why}: {url[:200]}", b"BADURL " + url.encode("utf-8", "replace")[:300])


def _mailbox_name(enc: str) -> str:
    text = unquote_to_bytes(enc).decode("utf-8")
    if text.isascii() and "&" in text:  # RFC 2192 URLs carried modified UTF-7
        try:
            return mutf7.decode(text)
        except mutf7.BadName:
            pass
    return text


async def resolve(s: Session, url: str) -> bytes:
    """The bytes a URL names, from the session's own mailboxes."""
    path = url
    absolute = _ABSOLUTE.match(url)
    if absolute:
        user, path = absolute.group(1), absolute.group(2)
        if user and unquote_to_bytes(user).decode("utf-8", "replace") != s.user:
            raise _bad(url, "URL names another user")
    m = _PATH.match(path)
    if m is None:
        raise _bad(url, "not an IMAP URL of a message")
    try:
        name = _mailbox_name(m.group(1))
    except UnicodeDecodeError:
        raise _bad(url, "mailbox name is not UTF-8") from None
    row = await s.db.read(reads.mailbox, s.user, name)
    if row is None or row[2] != int(m.group(2)):
        raise _bad(url, "no such mailbox, or its UIDVALIDITY changed")
    raw = await s.db.read(reads.message_raw, row[0], int(m.group(3)))
    if raw is None:
        raise _bad(url, "no such message")
    data = raw
    if m.group(4):
        section = unquote_to_bytes(m.group(4)).decode("utf-8", "replace")
        try:
            item = fetchmod.parse_items(Atom(f"BODY.PEEK[{section}]")).items[0]
            data = sections.section(raw, item.path, item.spec, item.fields)
        except (ParseError, sections.NoSuchPart):
            raise _bad(url, "no such section") from None
    if m.group(5):
        start = int(m.group(5))
        data = data[start : None if m.group(6) is None else start + int(m.group(6))]
    return data


async def assemble(s: Session, parts: list) -> bytes:
    """The message of `CATENATE (TEXT literal / URL url ...)`."""
    if not parts:
        raise Bad("CATENATE needs at least one part")
    out = bytearray()
    limit = s.settings.literal_limit()
    i = 0
    while i < len(parts):
        kind = parts[i]
        if not isinstance(kind, Atom) or i + 1 >= len(parts):
            raise Bad("CATENATE parts are TEXT literal or URL url")
        value = parts[i + 1]
        if kind.upper() == "TEXT":
            if not isinstance(value, Literal):
                raise Bad("CATENATE TEXT takes a literal")
            out += value
        elif kind.upper() == "URL":
            out += await resolve(s, as_astring(value, "URL").decode("utf-8", "replace"))
        else:
            raise Bad(f"unknown CATENATE part {kind[:20]}")
        if len(out) > limit:
            raise No(f"message over the limit of {limit} bytes", b"TOOBIG")
        i += 2
    return bytes(out)
