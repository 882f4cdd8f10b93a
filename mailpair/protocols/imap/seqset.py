"""Sequence sets (RFC 9051 section 9, sequence-set): parsing and resolving against a mailbox."""

from __future__ import annotations

import bisect

from mailpair.protocols.imap.args import ParseError

Ranges = list[tuple[int | None, int | None]]  # None stands for "*"


def parse(text: str) -> Ranges | str:
    """Ranges of a sequence set, or "$" for the saved search result (SEARCHRES)."""
    if text == "$":
        return "$"
    out: Ranges = []
    if not text:
        raise ParseError("empty sequence set")
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        a = _num(lo)
        b = _num(hi) if sep else a
        out.append((a, b))
    return out


def _num(s: str) -> int | None:
    if s == "*":
        return None
    if not s.isdigit() or not s.isascii() or len(s) > 10:
        raise ParseError(f"bad sequence number {s!r}")
    n = int(s)
    if n == 0 or n > 0xFFFFFFFF:
        raise ParseError(f"sequence number {s!r} out of range")
    return n


def _bounds(a: int | None, b: int | None, star: int) -> tuple[int, int]:
    a = star if a is None else a
    b = star if b is None else b
    return (a, b) if a <= b else (b, a)


def resolve_msn(ranges: Ranges, count: int) -> list[int]:
    """Message sequence numbers (1-based) a set names, in order, each once. A number beyond the
    mailbox is an error for the caller to report (RFC 9051 asks for BAD)."""
    if count == 0:
        return []  # "1:*" on an empty mailbox names nothing, and is no error
    seen: set[int] = set()
    for a, b in ranges:
        lo, hi = _bounds(a, b, count)
        if hi > count or lo < 1:
            raise ParseError("message sequence number beyond the mailbox" if count else "mailbox is empty")
        seen.update(range(lo, hi + 1))
    return sorted(seen)


def resolve_uids(ranges: Ranges, uids: list[int]) -> list[int]:
    """The UIDs of `uids` (sorted) that a UID set names; UIDs that do not exist are ignored."""
    if not uids:
        return []
    star = uids[-1]
    if len(ranges) == 1:
        lo, hi = _bounds(*ranges[0], star)
        return uids[bisect.bisect_left(uids, lo) : bisect.bisect_right(uids, hi)]
    out: set[int] = set()
    for a, b in ranges:
        lo, hi = _bounds(a, b, star)
        out.update(uids[bisect.bisect_left(uids, lo) : bisect.bisect_right(uids, hi)])
    return sorted(out)


def contains(ranges: Ranges, n: int, star: int) -> bool:
    for a, b in ranges:
        lo, hi = _bounds(a, b, star)
        if lo <= n <= hi:
            return True
    return False


def uid_ranges_plain(ranges: Ranges, star: int) -> list[tuple[int, int]]:
    return [_bounds(a, b, star) for a, b in ranges]
