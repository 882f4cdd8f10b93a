"""Reading header fields the way RFC 5322 says: unfolded before anything looks inside them.
The one email-package policy every MIME reader in mailpair uses."""

from __future__ import annotations

import email.policy
import re

_FOLD = re.compile(r"\r?\n(?=[ \t])")


def unfold(value: str) -> str:
    """RFC 5322 2.2.3: unfolding removes each CRLF that is followed by a space or tab (a bare LF
    too: mail read from files often has them). Parameters are parsed only after this, so a value
    folded inside its quotes (boundary="a<CRLF> b") reads as "a b", not with the line break."""
    return _FOLD.sub("", value) if "\n" in value else value


class _Unfolding(email.policy.Compat32):
    """compat32, except that a field's value is unfolded when it is read (msg.get, get_params,
    get_boundary, the parser's own boundary lookup); compat32 hands it over with its line
    breaks, so a folded boundary made a multipart message one opaque part."""

    def header_fetch_parse(self, name, value):
        return super().header_fetch_parse(name, unfold(value) if isinstance(value, str) else value)


POLICY = _Unfolding()
