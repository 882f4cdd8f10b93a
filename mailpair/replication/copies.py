"""What the active knows about the copies of its databases: per copy its streams, acknowledged
LSN and what the passive last reported; per database when recent records were written and how
many bytes, so the copy queue can be told in bytes and copy lag in time.

Rules this module keeps:
- A CopyView is changed only on the event loop; HeadTracker is written on the store's writer
  thread and read on the loop, under its lock.
- `streams` counts open streams, `opening` the streams and seeds being served from their first
  step: a copy with either is here, and its pin is never let go of (policy.pin_may_be_released).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import threading
import time
from typing import Any


class HeadTracker:
    """Per database: when each recent batch was written and the log's running byte count, so the
    copy queue can be told in bytes and copy lag in time. Written by the store's writer thread,
    read on the event loop, hence the lock."""

    def __init__(self, keep: int = 100_000):
        self.keep = keep
        self._lock = threading.Lock()
        self._lsns: list[int] = []  # last LSN of each batch
        self._times: list[float] = []  # monotonic time it was durable
        self._bytes: list[int] = []  # running byte count after it
        self.total_bytes = 0

    def add(self, last_lsn: int, nbytes: int) -> None:
        with self._lock:
            self.total_bytes += nbytes
            self._lsns.append(last_lsn)
            self._times.append(time.monotonic())
            self._bytes.append(self.total_bytes)
            if len(self._lsns) > 2 * self.keep:
                del self._lsns[: self.keep], self._times[: self.keep], self._bytes[: self.keep]

    def bytes_after(self, lsn: int, records_behind: int) -> int:
        """Bytes written after lsn (an estimate when lsn is older than what is remembered)."""
        if records_behind <= 0:
            return 0
        with self._lock:
            if not self._lsns:
                return 0
            i = bisect.bisect_right(self._lsns, lsn) - 1
            if i < 0:
                span = self._lsns[-1] - self._lsns[0] + 1
                return int(records_behind * (self._bytes[-1] - self._bytes[0]) / max(1, span))
            return self.total_bytes - self._bytes[i]

    def written_at(self, lsn: int) -> float | None:
        """Monotonic time the batch holding lsn was durable on the active."""
        with self._lock:
            i = bisect.bisect_left(self._lsns, lsn)
            return self._times[i] if i < len(self._lsns) else None


class CopyView:
    """What the active knows about one passive copy of one database."""

    @property
    def connected(self) -> bool:
        return self.streams > 0

    def __init__(self, database: str, node: str):
        self.database = database
        self.node = node
        self.streams = 0  # open streams of this copy (a reconnect may overlap the old one's end)
        self.opening = 0  # its streams and seeds being served, counted from their first step
        self.away_since = time.monotonic()  # when it last had none
        self.mode = "file"
        self.acked = 0
        self.passive: dict[str, Any] = {}
        self.reason: str | None = "not connected yet"
        self.lag_samples: collections.deque[float] = collections.deque(maxlen=100_000)  # ms
        self._pinned = -1
        self._pinned_at = 0.0
        self.pin_task: asyncio.Task | None = None
