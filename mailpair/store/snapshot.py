"""A consistent snapshot of a database's state, taken while its writer goes on.

Rules this module keeps:
- The snapshot is one read transaction: SQLite's online backup API, from a read-only connection,
  in one step (pages=-1). In WAL mode readers never block the writer, so replay and deliveries go
  on; the copy is one version of the database, and `meta.applied_lsn` inside it says exactly which
  log records it holds (the applied LSN is written in the same transaction as each change).
- The copy is one self-contained file (journal mode DELETE, no WAL beside it), fsync'd before
  the function returns, so whoever renames it into place (seeding, a backup) renames durable data.
- Nothing here knows who asked: seeding a copy (replication/seed.py) and backups both use it.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailpair.durable import fsync_file
from mailpair.store.schema import get_meta

STATE_FILE = "state.sqlite"


@dataclass(frozen=True, slots=True)
class Snapshot:
    path: Path  # the copy of the state file
    applied_lsn: int  # the last log record whose effect it holds
    epoch: int  # the epoch of that record
    db_id: bytes | None  # the database id the state file names


def take_snapshot(db_path: Path, dest: Path) -> Snapshot:
    """Copy DB_PATH/state.sqlite to DEST (which must not exist; it is created 0600) as one
    consistent version. On any failure DEST is removed, so a partial file is never left looking like a snapshot."""
    dest = Path(dest)
    # created 0600 here, whatever the umask: SQLite keeps an existing file's mode and gives its
    # journal the same, and the copy holds mail and password hashes
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        src = sqlite3.connect(f"file:{Path(db_path) / STATE_FILE}?mode=ro", uri=True)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")
            applied = get_meta(dst, "applied_lsn", 0)
            epoch = get_meta(dst, "epoch", 1)
            db_id = get_meta(dst, "db_id")
        finally:
            dst.close()
            src.close()
        fsync_file(dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Snapshot(dest, applied, epoch, db_id)


def snapshot_beside(db_path: Path) -> Snapshot:
    """take_snapshot into a temporary `.snapshot-*.sqlite` file in the database directory (the
    shipper deletes any such file a crash left). The caller deletes the file."""
    fd, name = tempfile.mkstemp(prefix=".snapshot-", suffix=".sqlite", dir=db_path)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # take_snapshot creates it afresh (mkstemp only chose a free name)
    return take_snapshot(db_path, tmp)
