"""Validation of names that come from outside: user names, mailbox names, flags, database names.

A name that could escape a directory, break a protocol line or confuse a parser is refused here,
before any record is written, with an error that says why.
"""

from __future__ import annotations

import re

from mailpair.store.errors import StoreError

DELIMITER = "/"
MAX_MAILBOX_NAME = 512
MAX_MAILBOX_DEPTH = 32
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_DB_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# RFC 3501 atom-specials plus the wildcard and resp-specials that would break a flag.
_FLAG_BAD = set('(){ %*"\\]') | {chr(c) for c in range(0x20)} | {"\x7f"}
SYSTEM_FLAGS = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}


class InvalidName(StoreError, ValueError):
    """A name from outside is not acceptable; the message says why."""


def check_user(name: str) -> str:
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise InvalidName(f"invalid user name {name!r}: use 1-64 of a-z 0-9 . _ + -, starting with a letter or digit")
    if ".." in name:
        raise InvalidName(f"invalid user name {name!r}: '..' is not allowed")
    return name


def check_database(name: str) -> str:
    if not isinstance(name, str) or not _DB_RE.match(name):
        raise InvalidName(f"invalid database name {name!r}: use 1-32 of a-z 0-9 _ -")
    return name


def normalise_mailbox(name: str) -> str:
    """The stored form of a mailbox name: INBOX in any case becomes INBOX (also as a parent)."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX" + DELIMITER:
        return "INBOX" + name[5:]
    return name


def check_mailbox(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidName("mailbox name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_NAME:
        raise InvalidName(f"mailbox name is longer than {MAX_MAILBOX_NAME} bytes")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise InvalidName("mailbox name contains a control character")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise InvalidName("mailbox name is not valid Unicode")
    if "*" in name or "%" in name:
        raise InvalidName("mailbox name contains a wildcard (* or %)")
    parts = name.split(DELIMITER)
    if any(p == "" for p in parts):
        raise InvalidName(f"mailbox name {name!r} has an empty level (leading, trailing or double {DELIMITER})")
    if any(p in (".", "..") for p in parts):
        raise InvalidName(f"mailbox name {name!r} has a '.' or '..' level")
    if len(parts) > MAX_MAILBOX_DEPTH:
        raise InvalidName(f"mailbox name is nested deeper than {MAX_MAILBOX_DEPTH} levels")
    return normalise_mailbox(name)


def check_flag(flag: str) -> str:
    if not isinstance(flag, str) or not flag:
        raise InvalidName("flag is empty")
    if flag.startswith("\\"):
        for sys_flag in SYSTEM_FLAGS:
            if flag.lower() == sys_flag.lower():
                return sys_flag
        raise InvalidName(f"unknown system flag {flag!r}")
    if len(flag) > 128 or any(c in _FLAG_BAD or ord(c) > 0x7E for c in flag):
        raise InvalidName(f"invalid keyword {flag!r}")
    return flag
