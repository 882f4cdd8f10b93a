"""Copying the state file's WAL into the file itself, on a thread of its own.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, so one group
commit in eight or so would also copy and fsync megabytes of pages while every caller waits. The
writer turns that off (wal_autocheckpoint=0) and pokes this thread instead; it checkpoints on its
own connection, on the machine's other core (SQLite releases the GIL), holding the writer up only
for the last few frames. The writer's own checkpoint (Database.checkpoint: TRUNCATE,
fsync, pin) still bounds the WAL and decides what log the database may drop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from mailpair.store.schema import connect

logger = logging.getLogger("mailpair.store")

POKE_EVERY = 256  # records between checkpoints: about a thousand 4 KiB pages of deliveries
RESTART_WAIT_MS = 50  # how long a RESTART checkpoint waits for the writer and readers


class Checkpointer:
    def __init__(self, path: Path, name: str):
        self.path = path
        self._wake = threading.Event()
        self._stop = False
        self._pending = 0
        self.runs = 0
        self._thread = threading.Thread(target=self._loop, name=f"ckpt-{name}", daemon=True)
        self._thread.start()

    def committed(self, records: int) -> None:
        """Called by the writer after each commit."""
        self._pending += records
        if self._pending >= POKE_EVERY:
            self._pending = 0
            self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    if conn is None:
                        conn = connect(self.path)
                        conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                    # PASSIVE copies the bulk without holding anyone up; RESTART then copies the
                    # few frames written meanwhile and lets the next write start the WAL over, so
                    # it stays a few MiB instead of growing until the writer's own checkpoint
                    # (every lookup in a long WAL costs more). If readers keep it busy, next time.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                    self.runs += 1
                except sqlite3.Error as e:
                    # Nothing is lost: the pages stay in the WAL for the next try or the writer's
                    # own checkpoint.
                    logger.warning("state file %s: background checkpoint failed: %s", self.path, e)
        finally:
            if conn is not None:
                conn.close()
