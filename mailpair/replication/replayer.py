"""The passive's replayer: applies stored records with the store's replay code (the same code as
crash recovery), in batches, on the database's writer thread.

It can be paused (suspend), and a lagged copy replays only records older than `delay_s`, so an
admin can step back from logical damage before it reaches the copy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time

from mailpair.store import Database

log = logging.getLogger("mailpair.replication")

STEP = 500  # records per replay call, so a pause takes effect quickly
RETRY_S = 5.0  # how often replay tries again on a full disk


class Replayer:
    def __init__(self, db: Database, delay_s: float = 0.0, checkpoint_every: int = 20_000):
        self.db = db
        self.delay_s = delay_s
        self.checkpoint_every = checkpoint_every
        self.paused = False
        self.error: str | None = None
        # (lsn, record time in s, size) of stored records not yet replayed
        self.pending: collections.deque[tuple[int, float, int]] = collections.deque()
        self.pending_bytes = 0
        self.last_replayed_time: float | None = None
        self.replayed = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._busy: asyncio.Future | None = None
        self._checkpointed = db.applied_lsn
        self._retry_at: float | None = None  # set while a full disk holds replay up

    async def start(self) -> None:
        await asyncio.to_thread(self._load_pending)
        self._task = asyncio.create_task(self._run())

    def _load_pending(self) -> None:
        """After a restart: the stored records the state has not applied yet."""
        db = self.db
        if db.log.last_lsn > db.applied_lsn:
            for rec in db.log.read_from(db.applied_lsn + 1):
                self.added(rec.lsn, rec.timestamp_us / 1e6, len(rec.payload))

    def added(self, lsn: int, ts: float, size: int) -> None:
        self.pending.append((lsn, ts, size))
        self.pending_bytes += size
        self._wake.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.error = None
        self._retry_at = None
        self._wake.set()

    async def _on_writer(self, fn, *args):
        """Run a store call on a worker thread; shielded, so close() can wait for it to end
        rather than leave it to reach the writer after the store has stopped it."""
        self._busy = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(self._busy)
        finally:
            if self._busy.done():
                self._busy = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._busy is not None:
            with contextlib.suppress(BaseException):
                await self._busy

    def _target(self) -> tuple[int, float | None]:
        """The last LSN that may be replayed now, and when the next one becomes due."""
        if not self.pending:
            return self.db.applied_lsn, None
        if self.delay_s <= 0:
            return self.pending[-1][0], None
        cutoff = time.time() - self.delay_s
        target = self.db.applied_lsn
        for lsn, ts, _ in self.pending:
            if ts > cutoff:
                return target, ts - cutoff
            target = lsn
        return target, None

    async def _run(self) -> None:
        while True:
            if self.error and self._retry_at is not None and time.monotonic() >= self._retry_at:
                self.error = self._retry_at = None  # the admin may have made room by now
            target, due_in = self._target()
            if self.paused or self.error or target <= self.db.applied_lsn:
                self._wake.clear()
                timeout = min(due_in, 1.0) if due_in is not None else 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                continue
            # No waiting for more to gather: a read from the log starts near its LSN, so a small
            # replay costs what it applies, and replaying each stored batch right after its ack
            # keeps the passive's work out of the way of the next one (copy lag, sync mode).
            upto = min(target, self.db.applied_lsn + STEP)
            try:
                n = await self._on_writer(self.db.replay_stored, upto, STEP)
            except Exception as e:  # a record that cannot be applied stops replay; nothing is skipped
                self._stopped(f"replay stopped at LSN {self.db.applied_lsn + 1}: {e}", e)
                continue
            self.replayed += n
            applied = self.db.applied_lsn
            while self.pending and self.pending[0][0] <= applied:
                _, ts, size = self.pending.popleft()
                self.pending_bytes -= size
                self.last_replayed_time = ts
            if applied - self._checkpointed >= self.checkpoint_every:
                # the passive's state file becomes durable and its old log segments can go
                try:
                    await self._on_writer(self.db.checkpoint)
                except Exception as e:  # a full disk, say: replay waits, it does not end unseen
                    self._stopped(f"checkpoint of the copy failed after LSN {applied}: {e}", e)
                    continue
                self._checkpointed = applied

    def _stopped(self, why: str, e: BaseException) -> None:
        self.error = why
        if _environmental(e):
            # not the record's fault (a full disk, an I/O error): it goes on by itself later
            self.error += f"; trying again every {RETRY_S:.0f} s"
            self._retry_at = time.monotonic() + RETRY_S
        log.error("database %s: %s", self.db.name, self.error)


def _environmental(e: BaseException) -> bool:
    """Did replay fail for the machine's sake (SQLite's disk full or I/O errors, which it may
    report for a full disk too, or an OSError), not for a record that cannot be applied?"""
    return isinstance(e, sqlite3.OperationalError | OSError)
