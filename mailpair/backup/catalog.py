"""A target's catalog of one database's backups: reading it, checking it, choosing what a restore
needs, and retention.

Rules this module keeps:
- Decisions are pure functions of the manifests (`chain_problems`, `needed`, `choose_full`); the
  I/O (reading manifests and files) stays at the edges, in `manifests` and `verify`.
- A chain runs from a full: each incremental starts right after its base's last LSN, each
  differential right after its full's. A backup whose base is missing or leaves a gap is unsound.
- Retention never deletes what a kept backup needs: its base, its base's base, up to its full.
- verify checks every file (size, SHA-256), every log record (the log's own scanner: CRCs and
  LSN order), the snapshot's applied LSN and SQLite's own check, and every chain; each problem
  names the backup and the file.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from mailpair.backup.logfiles import read_records
from mailpair.backup.manifest import STATE_FILE, Kind, Manifest, check_fields
from mailpair.backup.target import BackupTarget, TargetError, hash_file
from mailpair.store.log import LogError
from mailpair.store.schema import get_meta

STALE_PENDING_S = 24 * 3600.0  # a pending backup this old was interrupted


def manifests(target: BackupTarget, database: str) -> list[Manifest]:
    """The database's readable, well-formed manifests, oldest first (verify reports the others)."""
    out = []
    for backup_id in target.backup_ids(database):
        try:
            raw = target.read_manifest(database, backup_id)
            check_fields(raw)
        except (TargetError, ValueError):
            continue
        out.append(Manifest(raw))
    return out


# ---------------------------------------------------------------------- pure decisions
def chain_problems(backups: list[Manifest]) -> list[str]:
    """Where the chains from each full break (base missing, another database, an LSN gap)."""
    by_id = {m.id: m for m in backups}
    problems = []
    for m in backups:
        if m.kind is Kind.FULL:
            if m.last_lsn < m.first_lsn:
                problems.append(f"backup {m.id}: last LSN {m.last_lsn} is before its snapshot's {m.first_lsn}")
            continue
        base = by_id.get(m.base or "")
        if base is None:
            problems.append(f"backup {m.id}: its base backup {m.base} is missing")
            continue
        if base.db_id != m.db_id:
            problems.append(f"backup {m.id}: its base {base.id} is of another database")
        if m.kind is Kind.DIFFERENTIAL and base.kind is not Kind.FULL:
            problems.append(f"backup {m.id}: a differential whose base {base.id} is not a full")
        if m.first_lsn != base.last_lsn + 1:
            problems.append(f"backup {m.id}: starts at LSN {m.first_lsn}, but its base {base.id} ends at {base.last_lsn}")
        if m.last_lsn < m.first_lsn - 1:
            problems.append(f"backup {m.id}: LSN range {m.first_lsn}..{m.last_lsn} runs backwards")
    return problems


def needed(backups: list[Manifest], keep: Iterable[str]) -> set[str]:
    """The ids to keep: KEEP and every backup they need (bases down to the full)."""
    by_id = {m.id: m for m in backups}
    out: set[str] = set()
    for backup_id in keep:
        while backup_id in by_id and backup_id not in out:
            out.add(backup_id)
            backup_id = by_id[backup_id].base or ""
    return out


def to_keep(backups: list[Manifest], keep_full: int | None, keep_days: float | None, now: float) -> set[str]:
    """Retention: the newest KEEP_FULL fulls with everything built on them, and every backup
    finished in the last KEEP_DAYS days, with what they need. With no rule, everything."""
    if keep_full is None and keep_days is None:
        return {m.id for m in backups}
    keep: set[str] = set()
    if keep_full is not None:
        fulls = [m.id for m in backups if m.kind is Kind.FULL][-keep_full:] if keep_full > 0 else []
        keep |= {m.id for m in backups if m.full in fulls}
    if keep_days is not None:
        keep |= {m.id for m in backups if now - m.finished <= keep_days * 86400}
    return needed(backups, keep)


def choose_full(backups: list[Manifest], lsn: int | None, until: float | None) -> Manifest | None:
    """The newest full a restore to LSN (or to time UNTIL) can start from."""
    for m in reversed(backups):
        if m.kind is not Kind.FULL:
            continue
        if lsn is not None and (m.snapshot_lsn or 0) > lsn:
            continue
        if until is not None and (m.snapshot_time is None or m.snapshot_time > until):
            continue
        return m
    return None


def restore_chain(backups: list[Manifest], full: Manifest) -> list[Manifest]:
    """The backups whose records follow FULL's, in the order they extend it: FULL, then the
    later ones of its chain. A differential and the incrementals it overlaps are both listed;
    restore takes each record once."""
    return [full] + [m for m in backups if m.full == full.id and m.id != full.id and m.id > full.id]


# ---------------------------------------------------------------------- verify
def check_file(target: BackupTarget, m: Manifest, entry: dict) -> Path | None:
    name = entry["name"]
    try:
        path = target.local_file(m.raw["database"], m.id, name)
    except TargetError as e:
        raise ValueError(str(e)) from None
    stored = hash_file(path)
    if stored.size != entry["size"]:
        raise ValueError(f"backup {m.id}: file {path} has {stored.size} bytes, the manifest says {entry['size']}")
    if stored.sha256 != entry["sha256"]:
        raise ValueError(f"backup {m.id}: file {path} fails its SHA-256 check (damaged)")
    return path


def check_backup(target: BackupTarget, m: Manifest) -> list[str]:
    """Every problem of one backup's files and records."""
    problems = []
    db_id = uuid.UUID(m.db_id).bytes
    expected = m.first_lsn + 1 if m.kind is Kind.FULL else m.first_lsn
    for entry in m.files:
        try:
            path = check_file(target, m, entry)
        except (ValueError, OSError) as e:
            problems.append(str(e))
            continue
        if entry["name"] == STATE_FILE:
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                    applied = get_meta(conn, "applied_lsn", 0)
                finally:
                    conn.close()
            except sqlite3.Error as e:
                problems.append(f"backup {m.id}: file {path} is not a sound database ({e})")
                continue
            if ok != "ok" or applied != m.snapshot_lsn:
                problems.append(
                    f"backup {m.id}: file {path}: check says {ok!r}, applied LSN {applied} (manifest: {m.snapshot_lsn})"
                )
        elif entry["name"].startswith("log/"):
            try:
                last = None
                for rec in read_records(path, db_id):
                    if rec.lsn < expected:
                        continue
                    if rec.lsn != expected:
                        raise LogError(f"{path}: record LSN {rec.lsn} where {expected} was expected")
                    expected += 1
                    last = rec
                if last is None or last.lsn != entry.get("last_lsn", last.lsn):
                    raise LogError(f"{path}: ends at LSN {expected - 1}, the manifest says {entry.get('last_lsn')}")
            except (LogError, OSError) as e:
                problems.append(f"backup {m.id}: file {e}" if str(e).startswith(str(path)) else f"backup {m.id}: {e}")
    if not problems and expected - 1 != m.last_lsn:
        problems.append(f"backup {m.id}: its log files end at LSN {expected - 1}, the manifest says {m.last_lsn}")
    return problems


def verify(target: BackupTarget, database: str | None = None, backup_id: str | None = None) -> tuple[int, list[str]]:
    """(backups checked, problems) for every backup of the target (or one database, one id)."""
    problems: list[str] = []
    checked = 0
    for db in [database] if database else target.databases():
        good: list[Manifest] = []
        for bid in target.backup_ids(db):
            if backup_id is not None and bid != backup_id:
                continue
            checked += 1
            try:
                raw = target.read_manifest(db, bid)
                check_fields(raw)
            except (TargetError, ValueError) as e:
                problems.append(f"backup {bid}: manifest: {e}")
                continue
            m = Manifest(raw)
            found = check_backup(target, m)
            problems += found
            good.append(m)
        if backup_id is None:
            problems += chain_problems(good)
    return checked, problems


def prune(target: BackupTarget, database: str, keep_full: int | None, keep_days: float | None) -> list[str]:
    """Delete what retention does not keep (never what a kept backup needs), and pending backups
    an interrupted run left. Returns the deleted ids."""
    backups = manifests(target, database)
    keep = to_keep(backups, keep_full, keep_days, time.time())
    gone = []
    for m in backups:
        if m.id not in keep:
            target.delete(database, m.id)
            gone.append(m.id)
    target.discard_stale(database, STALE_PENDING_S)
    return gone
