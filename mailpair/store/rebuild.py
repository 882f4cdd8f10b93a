"""Rebuilding a database's state from its log, when the state file is damaged or lost.

Possible only while the log still starts at LSN 1 (nothing truncated); otherwise the copy on the
other node is the source (reseed). The damaged file is kept aside, never deleted.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from mailpair.durable import fsync_dir
from mailpair.store.database import Database
from mailpair.store.log import TransactionLog


class RebuildError(Exception):
    pass


def rebuild_state(path: Path) -> tuple[Path, int]:
    path = Path(path)
    if not (path / "id").exists():
        raise RebuildError(f"{path} is not a mailpair database")
    log = TransactionLog(path / "log", uuid.UUID((path / "id").read_text().strip()).bytes)
    log.open()
    first = log.first_lsn
    log.close()
    if first > 1:
        raise RebuildError(
            f"the log of {path.name} starts at LSN {first} (older segments were truncated after a "
            "checkpoint), so the state cannot be rebuilt from it alone: reseed this copy from the other node"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path / f"state.sqlite.damaged-{stamp}"
    state = path / "state.sqlite"
    if state.exists():
        state.rename(kept)
    for suffix in ("-wal", "-shm"):
        side = path / f"state.sqlite{suffix}"
        if side.exists():
            side.rename(path / f"{kept.name}{suffix}")
    fsync_dir(path)  # the damaged file is aside for good before a new state is built
    db = Database(path)
    db.open()
    applied = db.applied_lsn
    db.close()
    return kept, applied
