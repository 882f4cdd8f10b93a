"""A memory of recent successful logins, so a returning user is not made to pay the slow
password hash (scrypt, tens of ms of CPU) on every LOGIN, as Dovecot's auth cache does.

An entry is HMAC-SHA256 under a key made at random when the process starts and never stored,
over (user, password, the stored hash): the password itself is not kept, and a memory dump does
not give a cheap offline test for it without the key.

Rules kept:
- Only a login that the slow hash accepted creates an entry; a failed login never touches the
  cache and is always checked the slow way (so guessing stays slow).
- An entry counts only while the stored hash it was made against is still the account's hash:
  callers pass the hash they read from the database now, so a password change (a new hash, with
  a new salt) applied on this node, by a client here or by replay from the other node, makes
  every earlier entry for the user miss at once. Entries also expire after `ttl` seconds.
- Bounded: past `max_entries` the oldest are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict


class AuthCache:
    def __init__(self, ttl: float = 300.0, max_entries: int = 100_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._key = os.urandom(32)
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _tag(self, user: str, password: str, stored_hash: str) -> bytes:
        msg = b"\0".join(
            (user.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape"), stored_hash.encode())
        )
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def check(self, user: str, password: str, stored_hash: str) -> bool:
        """True when this exact password was accepted for this user, against this stored hash,
        less than ttl seconds ago. False means: check the slow way."""
        if self.ttl <= 0:
            return False
        entry = self._entries.get(user)
        if entry is None or time.monotonic() - entry[1] > self.ttl:
            self.misses += 1
            return False
        ok = hmac.compare_digest(entry[0], self._tag(user, password, stored_hash))
        if ok:
            self.hits += 1
        else:
            self.misses += 1
        return ok

    def remember(self, user: str, password: str, stored_hash: str) -> None:
        """After the slow hash accepted the password."""
        if self.ttl <= 0:
            return
        self._entries[user] = (self._tag(user, password, stored_hash), time.monotonic())
        self._entries.move_to_end(user)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        self._entries.pop(user, None)
