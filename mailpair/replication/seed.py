"""Seeding: a consistent snapshot of the active's state, and installing it as the passive's copy.

The snapshot is the store's (store/snapshot.py: one consistent version of the state, taken while
the writer goes on, whose `meta.applied_lsn` says exactly which log records it holds); backups
take theirs the same way. The passive then streams the log from the LSN after it.

On the passive a new copy is assembled beside the databases (DATA/replication/seed-NAME) and
renamed into place only when complete and durable, so a reseed over a broken copy replaces it
only when the new one is whole.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from mailpair.durable import fsync_dir, fsync_file
from mailpair.store.snapshot import snapshot_beside


def snapshot(db_path: Path) -> tuple[Path, int, int]:
    """A consistent snapshot of DB_PATH's state (store/snapshot.py, the one backups use too) in
    a temporary file beside it. Returns (file, applied LSN, epoch). The caller deletes the file."""
    snap = snapshot_beside(db_path)
    return snap.path, snap.applied_lsn, snap.epoch


def staging_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "replication" / f"seed-{name}"


def begin(data_dir: Path, name: str) -> Path:
    """A fresh staging directory for a new copy of NAME."""
    stage = staging_dir(data_dir, name)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def finish(stage: Path, db_id: bytes) -> None:
    """Make the staged copy durable: state file, its id, an empty log directory."""
    (stage / "log").mkdir(exist_ok=True)
    (stage / "id").write_text(str(uuid.UUID(bytes=db_id)) + "\n")
    for f in ("state.sqlite", "id"):
        fsync_file(stage / f)
    fsync_dir(stage / "log")
    fsync_dir(stage)


def install(stage: Path, target: Path) -> None:
    """Replace TARGET (if any) by the complete staged copy. The old copy is moved aside first and
    deleted only after the new one is in place."""
    old = stage.parent / f"old-{target.name}"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(stage, target)
    fsync_dir(target.parent)
    fsync_dir(stage.parent)
    if old.exists():
        shutil.rmtree(old)


def cleanup(data_dir: Path) -> None:
    """Drop staging left by an interrupted seed (it never replaced anything)."""
    root = Path(data_dir) / "replication"
    if root.exists():
        for p in root.glob("seed-*"):
            shutil.rmtree(p, ignore_errors=True)
