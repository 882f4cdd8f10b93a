"""Taking a backup of one database from a node's data directory, while the node runs.

Rules this module keeps:
- Only reads the node's database: a snapshot through store/snapshot.py (one consistent version,
  taken while replay goes on) and the log's segment files (backup/logfiles.py). The node is not
  paused and nothing of it changes, except the backup pin (store/database.py) written after the
  backup is published, so truncation keeps what the next backup needs.
- full: the snapshot and every log record after its applied LSN that the log holds now.
  incremental: the records since the last backup of any kind; differential: since the last
  full. A range whose first record was truncated is refused (take a full backup), never a gap.
- The backup is published by the target only when complete (target.py); on any failure what was
  written is dropped and the error is raised.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpair.backup import catalog
from mailpair.backup.logfiles import LogGap, RangeSummary, copy_range
from mailpair.backup.manifest import FORMAT, STATE_FILE, Kind, iso, new_id
from mailpair.backup.target import BackupTarget
from mailpair.store.schema import get_meta
from mailpair.store.snapshot import take_snapshot


class BackupError(Exception):
    """A backup cannot be taken as asked; nothing was published."""


@dataclass(frozen=True)
class Outcome:
    manifest: dict[str, Any]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """The command-line contract's object."""
        m = self.manifest
        return {
            "id": m["id"],
            "kind": m["kind"],
            "node": m["node"],
            "first_lsn": m["first_lsn"],
            "last_lsn": m["last_lsn"],
            "bytes": sum(f["size"] for f in m["files"]),
            "seconds": round(self.seconds, 3),
            "database": m["database"],
        }


def _applied_lsn(db_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{db_dir / STATE_FILE}?mode=ro", uri=True)
    try:
        return get_meta(conn, "applied_lsn", 0)
    finally:
        conn.close()


def take_backup(db_dir: Path, node: str, kind: Kind, target: BackupTarget) -> Outcome:
    """Back up the database in DB_DIR (a node's DATA/databases/NAME) to TARGET."""
    db_dir = Path(db_dir)
    database = db_dir.name
    try:
        db_id = uuid.UUID((db_dir / "id").read_text().strip())
    except (OSError, ValueError) as e:
        raise BackupError(f"{db_dir} is not a mailpair database ({e})") from None
    base = None
    if kind is not Kind.FULL:
        history = [m for m in catalog.manifests(target, database) if m.db_id == str(db_id)]
        candidates = history if kind is Kind.INCREMENTAL else [m for m in history if m.kind is Kind.FULL]
        if not candidates:
            raise BackupError(f"no full backup of database {database} in {target.describe()}: take a full backup first")
        base = candidates[-1]
    started = time.time()
    t0 = time.monotonic()
    backup_id = new_id(kind, started)
    pending = target.begin(database, backup_id)
    try:
        files = []
        snapshot: dict[str, Any] = {}
        if kind is Kind.FULL:
            snap = take_snapshot(db_dir, pending.scratch() / STATE_FILE)
            if snap.db_id is not None and snap.db_id != db_id.bytes:
                raise BackupError(f"{db_dir / STATE_FILE} belongs to another database")
            snapshot = {"snapshot_lsn": snap.applied_lsn, "snapshot_epoch": snap.epoch, "snapshot_time": iso(time.time())}
            stored = pending.put_local(STATE_FILE, snap.path)
            files.append({"name": stored.name, "size": stored.size, "sha256": stored.sha256, "role": "state"})
            first = snap.applied_lsn + 1
        else:
            first = base.last_lsn + 1
        summary = RangeSummary(first, first - 1)
        try:
            for piece in copy_range(db_dir / "log", db_id.bytes, first, summary):
                stored = pending.put_stream(f"log/{piece.name}", [piece.data])
                files.append(
                    {
                        "name": stored.name,
                        "size": stored.size,
                        "sha256": stored.sha256,
                        "role": "log",
                        "segment_first_lsn": piece.first_lsn,
                        "last_lsn": piece.last.lsn,
                    }
                )
        except LogGap as e:
            raise BackupError(f"database {database} on {node}: {e}; take a full backup") from None
        if summary.last_lsn < first and _applied_lsn(db_dir) >= first:
            # the state holds records the log no longer has: they were truncated
            raise BackupError(
                f"database {database} on {node}: records from LSN {first} are no longer in its log; take a full backup"
            )
        manifest = {
            "format": FORMAT,
            "id": backup_id,
            "kind": kind.value,
            "database": database,
            "db_id": str(db_id),
            "node": node,
            "base": None if base is None else base.id,
            "full": backup_id if base is None else base.full,
            "first_lsn": snapshot["snapshot_lsn"] if kind is Kind.FULL else first,
            "last_lsn": summary.last_lsn,
            "epochs": summary.epochs,
            "first_record_time": iso(None if summary.first_time_us is None else summary.first_time_us / 1e6),
            "last_record_time": iso(None if summary.last_time_us is None else summary.last_time_us / 1e6),
            "started": iso(started),
            "finished": iso(time.time()),
            "files": files,
            **snapshot,
        }
        pending.commit(manifest)
    except BaseException:
        pending.abort()
        raise
    return Outcome(manifest, time.monotonic() - t0)
