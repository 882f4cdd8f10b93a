"""Defences of the IMAP listener against one client or one address: the login penalty and the
per-address count of connections not yet logged in. Shared by the listeners of one store (imap
and imaps), kept in memory, bounded.

The login penalty works as Dovecot's auth penalty does: the wait comes BEFORE the password is
checked, so no answer, right or wrong, comes sooner than the penalty allows, and a client that
gives up and reconnects gains nothing (issue 17: the delay was a sleep before the failure reply
only, so a right password answered at once and 30 guesses took 4.4 s over fresh connections).

Rules kept:
- Failures are counted per address (an IPv4 address, an IPv6 /64) and per user name; an attempt
  waits until `delay(count)` seconds after the last failed attempt on each of its keys ended,
  the longer of the two. delay(0) = 0 (a returning user with no recent failures does not wait),
  delay(n) = login_delay * 2**(n-1), at most login_delay_max (settings.py).
- A success does not clear the counts (alternating a valid login with a guess would keep the
  guesses fast); counts are forgotten login_penalty_window seconds after their last failure.
- Attempts on the same key run one at a time (parallel connections queue), so the penalty of
  each applies to the next: 20 parallel guesses cost what 20 sequential ones do.
- Memory is bounded: at most `max_entries` keys of each kind (least recently used dropped); a
  key with an attempt in progress is never dropped. Names that are no account are dropped
  before anything else, so made-up names cannot flush the real accounts' counts out (they still
  get a key: whether a name waits must not tell whether it exists).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailpair.protocols.imap import metrics

if TYPE_CHECKING:
    from mailpair.protocols.imap.settings import ImapSettings

log = logging.getLogger("mailpair.imap")


@functools.lru_cache(maxsize=4096)
def address_key(peer: str) -> str:
    """The key one client host counts against: the IPv4 address, or the IPv6 /64 (what one host
    is usually given); anything else (a test's made-up peer) as it is."""
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    last: float = 0.0  # monotonic time of the last failure
    busy: int = 0  # attempts holding or waiting for the lock
    weak: bool = False  # a user name that is no account: dropped first
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LoginPenalty:
    """Read its figures from the settings at each use (a test may change them on a running host)."""

    def __init__(self, settings: ImapSettings):
        self.settings = settings
        self._keys: OrderedDict[str, _Entry] = OrderedDict()

    def delay(self, failures: int) -> float:
        base = self.settings.login_delay
        if failures <= 0 or base <= 0:
            return 0.0
        return min(self.settings.login_delay_max, base * 2 ** min(failures - 1, 30))

    def __len__(self) -> int:
        return len(self._keys)

    def _entry(self, key: str, weak: bool) -> _Entry:
        e = self._keys.get(key)
        if e is None:
            e = self._keys[key] = _Entry(weak=weak)
        else:
            e.weak = e.weak and weak
            self._keys.move_to_end(key)
        return e

    def _trim(self) -> None:
        excess = len(self._keys) - self.settings.login_penalty_entries
        if excess <= 0:
            return
        idle = [k for k, e in self._keys.items() if not e.busy]
        idle.sort(key=lambda k: not self._keys[k].weak)  # stable: weak ones first, oldest first
        for key in idle[:excess]:
            del self._keys[key]

    def _current(self, e: _Entry, now: float) -> int:
        if e.failures and now - e.last > self.settings.login_penalty_window:
            e.failures = 0
        return e.failures

    def wait_for(self, keys: list[str]) -> float:
        """Seconds an attempt on these keys (as `attempt` names them) would wait now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            e = self._keys.get(key)
            if e is not None and self._current(e, now):
                wait = max(wait, e.last + self.delay(e.failures) - now)
        return max(wait, 0.0)

    def failures(self, key: str) -> int:
        """Recent failures of a key ("address A" or "user U")."""
        e = self._keys.get(key)
        return 0 if e is None else self._current(e, time.monotonic())

    @staticmethod
    def _keys_of(address: str, user: str, account_exists: bool) -> dict[str, bool]:
        """The attempt's keys, each with whether it is weak (a name that is no account)."""
        return {"address " + address: False, "user " + user: not account_exists}

    def would_wait(self, address: str, user: str, account_exists: bool) -> bool:
        """Whether `acquire` would not return at once (a penalty, or another attempt on a key)."""
        keys = self._keys_of(address, user, account_exists)
        if any(k in self._keys and self._keys[k].busy for k in keys):
            return True
        return self.wait_for(list(keys)) > 0

    async def acquire(self, address: str, user: str, account_exists: bool) -> LoginAttempt:
        """Hold the attempt's keys (in a fixed order: no deadlock between two attempts) and wait
        out their penalty. The caller checks the password, reports a failure with `failed()`
        and always calls `release()`. Cancelled while waiting, it holds nothing."""
        named = self._keys_of(address, user, account_exists)
        keys = sorted(named)
        entries = [self._entry(k, named[k]) for k in keys]
        for e in entries:
            e.busy += 1
        self._trim()  # after marking them busy: an entry being used is never the one dropped
        held: list[_Entry] = []
        try:
            for e in entries:
                await e.lock.acquire()
                held.append(e)
            wait = self.wait_for(keys)
            if wait > 0:
                metrics.LOGIN_DELAYED.inc()
                metrics.LOGIN_PENALTY_SECONDS.inc(wait)
                await asyncio.sleep(wait)
        except BaseException:
            self._let_go(entries, held)
            raise
        return LoginAttempt(self, keys, entries, wait)

    def _let_go(self, entries: list[_Entry], held: list[_Entry]) -> None:
        for e in held:
            e.lock.release()
        for e in entries:
            e.busy -= 1
        self._trim()


class LoginAttempt:
    def __init__(self, penalty: LoginPenalty, keys: list[str], entries: list[_Entry], waited: float):
        self._penalty = penalty
        self.keys = keys
        self._entries = entries
        self.waited = waited
        self.failed_here = False
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.failed_here:
            now = time.monotonic()  # the next attempt's wait runs from the end of this one
            for e in self._entries:
                e.last = now
        self._penalty._let_go(self._entries, self._entries)

    def failed(self) -> int:
        """Count a failure on every key (at once, so a client that hangs up cannot avoid it);
        the most recent failures of any key, this one included."""
        now = time.monotonic()
        for e in self._entries:
            self._penalty._current(e, now)
            e.failures += 1
            e.last = now
        self.failed_here = True
        metrics.LOGIN_FAILURES.inc()
        return max(e.failures for e in self._entries)


class Admission:
    """Connections not yet logged in, per address: at most `limit` each (issue 17: 2,001 idle
    unauthenticated connections from one address made everyone else get BYE)."""

    def __init__(self) -> None:
        self.preauth: dict[str, int] = {}

    def enter(self, key: str, limit: int) -> bool:
        n = self.preauth.get(key, 0)
        if n >= limit:
            return False
        self.preauth[key] = n + 1
        return True

    def leave(self, key: str) -> None:
        n = self.preauth.get(key, 0) - 1
        if n <= 0:
            self.preauth.pop(key, None)
        else:
            self.preauth[key] = n


@dataclass
class Guard:
    """What the listeners of one store share."""

    penalty: LoginPenalty
    admission: Admission = field(default_factory=Admission)
