"""Tokenising a framed command into values, and the small typed readers handlers use.

Values: `Atom` (a str: atoms, numbers, flags, sequence sets, fetch items with their [section]
and <partial>), `bytes` (quoted strings and literals; `Binary` for literal8), `list`
(parenthesised). A malformed command raises `ParseError` with a reason for the BAD reply.
"""

from __future__ import annotations

import re


class ParseError(Exception):
    pass


class Atom(str):
    __slots__ = ()


class Literal(bytes):
    """A string sent as a literal ({n}), told apart from a quoted string where the grammar cares
    (APPEND: a quoted date-time versus the message)."""


class Binary(Literal):
    """A literal8 (~{n}) string: may hold NUL bytes (BINARY, RFC 3516)."""


_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_ATOM_STOP = frozenset(b' ()"\r\n\x00{')
_CTL = frozenset(range(0x20)) | {0x7F}
MAX_DEPTH = 32


def tokenize(segments: list[bytes]) -> list:
    """All values of a command, in order (tag and name included)."""
    lines = segments[0::2]
    literals = segments[1::2]
    root: list = []
    stack: list[list] = [root]
    for n, line in enumerate(lines):
        has_literal = n < len(literals)
        end = len(line)
        if has_literal:
            m = _LITERAL.search(line)
            if m is None:  # pragma: no cover - the framer only splits at literal markers
                raise ParseError("bad literal")
            end = m.start()
        i = 0
        while i < end:
            c = line[i]
            if c == 0x20:
                i += 1
                continue
            if c == 0x28:  # (
                if len(stack) > MAX_DEPTH:
                    raise ParseError(f"parentheses nested deeper than {MAX_DEPTH}")
                new: list = []
                stack[-1].append(new)
                stack.append(new)
                i += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise ParseError("unbalanced parenthesis")
                stack.pop()
                i += 1
            elif c == 0x22:  # "
                i, s = _quoted(line, i + 1)
                stack[-1].append(s)
            elif c == 0x7B or (c == 0x7E and i + 1 < len(line) and line[i + 1] == 0x7B):
                raise ParseError("literal marker must end the line")
            elif c in _CTL:
                raise ParseError("control character in command")
            else:
                i, a = _atom(line, i, end)
                stack[-1].append(Atom(a.decode("utf-8", "surrogateescape")))
        if has_literal:
            if end > 0 and line[end - 1] not in b" (":
                raise ParseError("literal must follow a space or parenthesis")
            lit = literals[n]
            stack[-1].append(Binary(lit) if m.group(1) else Literal(lit))
    if len(stack) != 1:
        raise ParseError("unbalanced parenthesis")
    return root


def _quoted(line: bytes, i: int) -> tuple[int, bytes]:
    out = bytearray()
    while i < len(line):
        c = line[i]
        if c == 0x22:
            return i + 1, bytes(out)
        if c == 0x5C:
            if i + 1 >= len(line) or line[i + 1] not in b'"\\':
                raise ParseError("bad escape in quoted string")
            out.append(line[i + 1])
            i += 2
            continue
        if c in (0x0D, 0x0A, 0x00):
            raise ParseError("bad character in quoted string")
        out.append(c)
        i += 1
    raise ParseError("unterminated quoted string")


# Fetch attributes whose [section] may hold spaces and parentheses (HEADER.FIELDS (A B)).
_SECTIONED = re.compile(rb"(?i)(?:BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[")


def _atom(line: bytes, i: int, end: int) -> tuple[int, bytes]:
    """An atom. `[` is an ordinary ATOM-CHAR (RFC 3501/9051 grammar: only resp-specials `]`
    are kept out of atoms, and astrings allow even that), except after a fetch attribute name,
    where [ ... ] is a section that may hold spaces and parentheses."""
    start = i
    depth = 0
    while i < end:
        c = line[i]
        if c == 0x5B and (depth or _SECTIONED.fullmatch(line, start, i + 1)):
            depth += 1
        elif c == 0x5D and depth:
            depth -= 1
        elif depth == 0 and (c in _ATOM_STOP or c in _CTL):
            break
        elif depth and c in _CTL:
            raise ParseError("control character in command")
        i += 1
    if depth:
        raise ParseError("unterminated [ in atom")
    if i == start:
        raise ParseError("empty atom")
    return i, line[start:i]


# ---------------------------------------------------------------------------- typed readers
class Args:
    """A cursor over a command's values, with readers that raise ParseError on a wrong kind."""

    def __init__(self, values: list):
        self.values = values
        self.i = 0

    def more(self) -> bool:
        return self.i < len(self.values)

    def peek(self):
        return self.values[self.i] if self.more() else None

    def next(self, what: str = "argument"):
        if not self.more():
            raise ParseError(f"missing {what}")
        v = self.values[self.i]
        self.i += 1
        return v

    def end(self) -> None:
        if self.more():
            raise ParseError("unexpected extra arguments")

    def atom(self, what: str = "atom") -> str:
        v = self.next(what)
        if not isinstance(v, Atom):
            raise ParseError(f"expected {what}")
        return v

    def astring(self, what: str = "string") -> bytes:
        return as_astring(self.next(what), what)

    def string(self, what: str = "string") -> bytes:
        v = self.next(what)
        if not isinstance(v, bytes):
            raise ParseError(f"expected {what} as a quoted string or literal")
        return v

    def number(self, what: str = "number") -> int:
        return as_number(self.next(what), what)

    def list(self, what: str = "list") -> list:
        v = self.next(what)
        if not isinstance(v, list):
            raise ParseError(f"expected a parenthesised {what}")
        return v

    def optional_list(self) -> list | None:
        return self.list() if isinstance(self.peek(), list) else None


def as_astring(v, what: str = "string") -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, Atom):
        return v.encode("utf-8", "surrogateescape")
    raise ParseError(f"expected {what}")


def as_number(v, what: str = "number", nz: bool = False) -> int:
    if not isinstance(v, Atom) or not v.isdigit() or not v.isascii() or len(v) > 20:
        raise ParseError(f"expected {what} as a number")
    n = int(v)
    if n > 2**63 - 1 or (nz and n == 0):
        raise ParseError(f"{what} out of range")
    return n
