"""Restore: a recovery data directory rebuilt from a full backup and the later backups, up to a
point in time or an LSN.

Rules this module keeps:
- Never writes into a live data directory: the destination's database directory must not exist
  (a pair's data directory has one), and the result is marked as a recovery directory.
- Every file is checked (size, SHA-256) before it is used, and a damaged one stops the restore
  with its name; nothing is skipped.
- Records are stored in the recovery database's log and applied by the store's one replay path
  (Database.replay_records, which calls store/apply.py's apply_records, as crash recovery and the
  passive copy do), in LSN order, each once, checked for continuity; a time limit stops before
  the first record stamped after it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpair.backup import catalog
from mailpair.backup.logfiles import read_records
from mailpair.backup.manifest import STATE_FILE, Manifest, iso
from mailpair.backup.target import BackupTarget, TargetError
from mailpair.durable import fsync_dir, fsync_file, write_atomic, write_json
from mailpair.store.database import Database
from mailpair.store.errors import StoreError
from mailpair.store.log import LogError, Record
from mailpair.store.verify import verify_database

RECOVERY_MARK = "recovery.json"
BATCH = 2000


class RestoreError(Exception):
    """The restore cannot be done as asked; names why (a file, a missing backup)."""


@dataclass(frozen=True)
class Restored:
    database: str
    full: str
    used: list[str]
    applied_lsn: int
    last_time: str | None
    seconds: float
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "full": self.full,
            "backups": self.used,
            "applied_lsn": self.applied_lsn,
            "last_record_time": self.last_time,
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
        }


def _checked(target: BackupTarget, m: Manifest, entry: dict) -> Path:
    try:
        return catalog.check_file(target, m, entry)
    except (ValueError, OSError) as e:
        raise RestoreError(str(e)) from None


def _records(target: BackupTarget, chain: list[Manifest], after: int) -> Iterator[tuple[Manifest, Record]]:
    """Each record after AFTER once, in LSN order, from the chain's log files."""
    db_id = uuid.UUID(chain[0].db_id).bytes
    nxt = after + 1
    for m in chain:
        if m.last_lsn < nxt:
            continue  # all of it is already taken (a differential beside its incrementals)
        if m.first_lsn > nxt and m is not chain[0]:
            raise RestoreError(f"backup {m.id} starts at LSN {m.first_lsn}: the backups hold nothing for LSN {nxt}")
        for entry in m.log_files():
            if entry.get("last_lsn", m.last_lsn) < nxt:
                continue
            path = _checked(target, m, entry)
            try:
                for rec in read_records(path, db_id):
                    if rec.lsn < nxt or rec.lsn > m.last_lsn:
                        continue
                    if rec.lsn != nxt:
                        raise RestoreError(f"backup {m.id}: file {path}: LSN {rec.lsn} where {nxt} was expected")
                    yield m, rec
                    nxt += 1
            except LogError as e:
                raise RestoreError(f"backup {m.id}: {e}") from None


def restore(
    target: BackupTarget,
    database: str,
    dest: Path,
    lsn: int | None = None,
    until: float | None = None,
) -> Restored:
    """Rebuild DATABASE into DEST/databases/DATABASE, up to LSN or to time UNTIL (seconds since
    the epoch; records stamped later are not applied), else to the end of the backups."""
    t0 = time.monotonic()
    backups = catalog.manifests(target, database)
    if not backups:
        raise RestoreError(f"no backup of database {database} in {target.describe()}")
    full = catalog.choose_full(backups, lsn, until)
    if full is None:
        when = f"LSN {lsn}" if lsn is not None else f"{iso(until)}"
        raise RestoreError(f"no full backup of database {database} is older than {when}")
    chain = catalog.restore_chain(backups, full)
    if lsn is not None and max(m.last_lsn for m in chain) < lsn:
        raise RestoreError(f"the backups of database {database} end at LSN {max(m.last_lsn for m in chain)}, before {lsn}")
    db_dir = Path(dest) / "databases" / database
    if db_dir.exists():
        raise RestoreError(f"{db_dir} exists: restore writes a new recovery directory, never over a database")
    db_dir.mkdir(parents=True)
    (db_dir / "log").mkdir()
    state = next((f for f in full.files if f["name"] == STATE_FILE), None)
    if state is None:
        raise RestoreError(f"backup {full.id}: its manifest lists no {STATE_FILE}")
    src = _checked(target, full, state)
    shutil.copyfile(src, db_dir / STATE_FILE)
    fsync_file(db_dir / STATE_FILE)
    write_atomic(db_dir / "id", f"{uuid.UUID(full.db_id)}\n")
    fsync_dir(db_dir)
    db = Database(db_dir, writable=False)
    try:
        db.open()
    except Exception as e:
        raise RestoreError(f"backup {full.id}: its snapshot does not open as a database ({e})") from None
    used: list[str] = [full.id]
    last_time_us = None
    nbytes = sum(int(f["size"]) for f in full.files)
    try:
        batch: list[Record] = []

        def store_and_replay(records: list[Record]) -> None:
            # as the passive does with what it receives: into the log (durable), then replayed,
            # so the recovery directory is a whole database, its log holding what was applied
            db.log.append([r.encode() for r in records], records[-1])
            db.replay_records(records)

        def flush() -> None:
            if batch:
                records = list(batch)
                db.call_on_writer(lambda: store_and_replay(records))
                batch.clear()

        for m, rec in _records(target, chain, db.applied_lsn):
            if lsn is not None and rec.lsn > lsn:
                break
            if until is not None and rec.timestamp_us > until * 1e6:
                break
            if m.id not in used:
                used.append(m.id)
                nbytes += sum(int(f["size"]) for f in m.files)
            batch.append(rec)
            last_time_us = rec.timestamp_us
            if len(batch) >= BATCH:
                flush()
        flush()
        db.checkpoint()
        applied = db.applied_lsn
    finally:
        db.close()
    if lsn is not None and applied != lsn:
        raise RestoreError(f"restored to LSN {applied}, not {lsn}: the backups hold no more")
    out = Restored(
        database, full.id, used, applied, iso(None if last_time_us is None else last_time_us / 1e6), time.monotonic() - t0, nbytes
    )
    write_json(Path(dest) / RECOVERY_MARK, {"recovery": True, "source": target.describe(), **out.as_json()}, indent=1)
    return out


def restore_all(
    target: BackupTarget, dest: Path, lsn: int | None = None, until: float | None = None, database: str | None = None
) -> list[Restored]:
    """Restore every database the target holds (or one)."""
    names = [database] if database else target.databases()
    if not names:
        raise RestoreError(f"{target.describe()} holds no backups")
    try:
        return [restore(target, name, dest, lsn, until) for name in names]
    except TargetError as e:
        raise RestoreError(str(e)) from None


def trial_restore(target: BackupTarget, database: str) -> list[str]:
    """Restore DATABASE to the end of its newest chain in a scratch directory and check the
    result with the store's verify; the problems found (none when sound). The scratch directory
    is removed."""
    scratch = Path(tempfile.mkdtemp(prefix="mailpair-trial-"))
    try:
        try:
            done = restore(target, database, scratch)
        except (RestoreError, TargetError, StoreError, LogError, OSError) as e:
            return [f"trial restore of {database}: {e}"]
        report = verify_database(scratch / "databases" / database)
        if report.records == 0 and report.applied_lsn == done.applied_lsn:
            # nothing after the snapshot: an empty log beside a state at its LSN, as a seeded copy
            # has; the store's verify wants a log to end there, the snapshot was checked instead
            return []
        return [f"trial restore of {database}: {p}" for p in report.problems]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
