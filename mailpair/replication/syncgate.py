"""Synchronous mode: hold a batch's callers until the passive has stored its last record.

The store calls `waiter(lsn, release)` on its writer thread after a batch is durable locally; the
writer does not wait (the next batch goes on), only the callers do. An acknowledgement releases
every waiting batch up to the stored LSN. When the passive is gone, or has not acknowledged for
`fallback_s`, the gate falls back to asynchronous (loudly) so the active keeps serving; it turns
synchronous again once the passive has caught up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("mailpair.replication")


class SyncGate:
    def __init__(self, db_name: str, fallback_s: float, catch_up: int):
        self.db_name = db_name
        self.fallback_s = fallback_s
        self.catch_up = catch_up
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[int, Callable[[], None], float]] = collections.deque()
        self.acked = 0
        self.connected = 0  # passives streaming this database
        self.gone_since: float | None = time.monotonic()  # no passive yet
        self.fallback = False
        self.fallbacks = 0

    def waiter(self, lsn: int, release: Callable[[], None]) -> None:
        """Store hook (writer thread)."""
        with self._lock:
            gone_long = self.gone_since is not None and time.monotonic() - self.gone_since > self.fallback_s
            if gone_long and not self.fallback:
                self._enter_fallback("no passive connected")
            if not (self.fallback or lsn <= self.acked):
                self._pending.append((lsn, release, time.monotonic()))
                return
        release()

    def on_ack(self, lsn: int, head: int) -> None:
        ready = []
        with self._lock:
            self.acked = max(self.acked, lsn)
            while self._pending and self._pending[0][0] <= self.acked:
                ready.append(self._pending.popleft()[1])
            if self.fallback and head - self.acked <= self.catch_up:
                self.fallback = False
                log.warning("database %s: passive caught up (LSN %d); replication is synchronous again", self.db_name, lsn)
        for release in ready:
            release()

    def set_connected(self, delta: int) -> None:
        with self._lock:
            self.connected += delta
            self.gone_since = None if self.connected > 0 else time.monotonic()

    def check(self) -> None:
        """Periodic (event loop): fall back when the oldest waiting batch waited too long."""
        with self._lock:
            if self._pending and time.monotonic() - self._pending[0][2] > self.fallback_s:
                self._enter_fallback(f"passive has not acknowledged for {self.fallback_s:.1f}s")
            elif self.gone_since is not None and time.monotonic() - self.gone_since > self.fallback_s and not self.fallback:
                self._enter_fallback("no passive connected")
            if not self.fallback:
                return
            ready = [p[1] for p in self._pending]
            self._pending.clear()
        for release in ready:
            release()

    def release_all(self) -> None:
        with self._lock:
            ready = [p[1] for p in self._pending]
            self._pending.clear()
        for release in ready:
            release()

    def _enter_fallback(self, why: str) -> None:
        # Called with the lock held; the waiting callers are released by the caller.
        self.fallback = True
        self.fallbacks += 1
        log.error(
            "database %s: SYNCHRONOUS REPLICATION FELL BACK TO ASYNCHRONOUS: %s; the active keeps serving "
            "without waiting for its copy",
            self.db_name,
            why,
        )
