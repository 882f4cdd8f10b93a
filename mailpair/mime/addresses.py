"""RFC 5322 address lists (section 3.4, with the obsolete forms of 4.4) as IMAP ENVELOPE
addresses (RFC 3501 7.4.2 / RFC 9051 7.5.2): (name adl mailbox host).

Rules kept:
- A group `name: members;` becomes a start marker (NIL NIL name NIL), its members, and an end
  marker (NIL NIL NIL NIL); nothing else has a NIL host, so a mailbox without a domain gets the
  placeholder host MISSING_HOST (as UW c-client does) rather than looking like a group.
- Comments (nested, with quoted pairs) are not part of any field; when an address has no
  display name, its last comment stands in for one (`bob@x (Bob Smith)`, the old convention).
- A route `<@a,@b:user@host>` (obs-route) goes to adl as "@a,@b".
- The display name is the phrase with quoted strings unquoted and runs of white space made one
  space; encoded words stay as sent (IMAP returns header bytes undecoded).
- A quoted local part keeps its quotes (it is the address as it must be written).
- Never raises: anything that does not parse is skipped up to the next comma.
"""

from __future__ import annotations

from dataclasses import dataclass

MISSING_HOST = ".MISSING-HOST-NAME."
_SPECIALS = '()<>[]:;@\\,."'


@dataclass(slots=True)
class Token:
    kind: str  # "atom", "quoted", "literal" (domain literal), "special", "comment"
    text: str  # atom text, unquoted string, [literal], the special character, comment text
    space: bool  # white space or a comment came right before it
    raw: str = ""  # the quoted string as written (for local parts)


def tokens(value: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(value)
    space = False
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            space = True
            i += 1
        elif c == "(":
            depth, j, buf = 1, i + 1, []
            while j < n and depth:
                ch = value[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(value[j + 1])
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if not depth:
                        break
                buf.append(ch)
                j += 1
            out.append(Token("comment", " ".join("".join(buf).split()), space))
            space = True
            i = j + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(value[j])
                j += 1
            out.append(Token("quoted", "".join(buf), space, value[i : j + 1]))
            space = False
            i = j + 1
        elif c == "[":
            j = value.find("]", i)
            j = n - 1 if j < 0 else j
            out.append(Token("literal", value[i : j + 1], space))
            space = False
            i = j + 1
        elif c in _SPECIALS:
            out.append(Token("special", c, space))
            space = False
            i += 1
        else:
            j = i
            while j < n and value[j] not in _SPECIALS and value[j] not in " \t\r\n":
                j += 1
            out.append(Token("atom", value[i:j], space))
            space = False
            i = j
    return out


def _phrase(toks: list[Token]) -> str:
    words: list[str] = []
    for t in toks:
        if t.kind == "comment":
            continue
        if words and t.space:
            words.append(" ")
        words.append(t.text)
    return "".join(words).strip()


def _dotted(toks: list[Token], quoted_raw: bool) -> str:
    """A local part or domain: its words and dots with the folding white space between them
    dropped (obs-local-part, obs-domain)."""
    return "".join(t.raw if quoted_raw and t.kind == "quoted" else t.text for t in toks if t.kind != "comment")


Address = tuple[str | None, str | None, str | None, str | None]


class _Parser:
    def __init__(self, toks: list[Token]):
        self.t = toks
        self.i = 0

    def peek(self) -> Token | None:
        while self.i < len(self.t) and self.t[self.i].kind == "comment":
            self.i += 1
        return self.t[self.i] if self.i < len(self.t) else None

    def is_special(self, chars: str) -> bool:
        t = self.peek()
        return t is not None and t.kind == "special" and t.text in chars

    def until(self, stop: str) -> list[Token]:
        """Tokens (comments included) up to a special in stop, not consuming it."""
        out = []
        while self.i < len(self.t):
            t = self.t[self.i]
            if t.kind == "special" and t.text in stop:
                break
            out.append(t)
            self.i += 1
        return out

    def skip(self, chars: str) -> None:
        if self.is_special(chars):
            self.i += 1


def _last_comment(toks: list[Token]) -> str | None:
    comments = [t.text for t in toks if t.kind == "comment" and t.text]
    return comments[-1] if comments else None


def _addr_spec(p: _Parser, stop: str) -> tuple[str | None, str | None, list[Token]]:
    local = p.until("@" + stop)
    domain: list[Token] = []
    if p.is_special("@"):
        p.i += 1
        domain = p.until(stop)
    return _dotted(local, True) or None, _dotted(domain, False) or None, local + domain


def _mailbox(p: _Parser, in_group: bool) -> list[Address]:
    """One mailbox, or a whole group when a phrase is followed by ':'."""
    stop = ",;" if in_group else ","
    start = p.i
    phrase = p.until("<:@" + stop + ">")
    nxt = p.peek()
    if nxt is not None and nxt.kind == "special" and nxt.text == ":" and not in_group:
        p.i += 1
        # The start marker's mailbox is the group name, "" when it has none (never NIL: that is
        # the end marker).
        out: list[Address] = [(None, None, _phrase(phrase), None)]
        while p.peek() is not None and not p.is_special(";"):
            if p.is_special(","):
                p.i += 1
                continue
            out += _mailbox(p, True)
        p.skip(";")
        p.until(",")  # CFWS after the group
        out.append((None, None, None, None))
        return out
    if nxt is not None and nxt.kind == "special" and nxt.text == "<":
        p.i += 1
        adl = None
        if p.is_special("@"):  # obs-route: @a,@b:
            mark = p.i
            route = p.until(":>")
            if p.is_special(":"):
                p.i += 1
                adl = "".join(t.text for t in route if t.kind != "comment") or None
            else:  # no ':' after all: an address that starts with '@'
                p.i = mark
        local, host, _ = _addr_spec(p, ">" + stop)
        p.skip(">")
        after = p.until(stop)
        name = _phrase(phrase) or _last_comment(after)
        if local is None and host is None:
            return []
        return [(name or None, adl, local, host or MISSING_HOST)]
    p.i = start
    local, host, toks = _addr_spec(p, stop)
    after = p.until(stop)
    if local is None and host is None:
        return []
    return [(_last_comment(toks + after), None, local, host or MISSING_HOST)]


def parse(value: str) -> list[Address]:
    """ENVELOPE addresses of one header value (unfolded or not)."""
    p = _Parser(tokens(value))
    out: list[Address] = []
    guard = 0
    while p.peek() is not None and guard < 10_000:
        guard += 1
        if p.is_special(",;>"):
            p.i += 1
            continue
        before = p.i
        out += _mailbox(p, False)
        if p.i == before:  # nothing consumed: step over the token
            p.i += 1
    return out
