"""Where backups are kept: one interface every backup target implements, and the directory one.

Rules this module keeps:
- A backup becomes visible only when complete: its files and its manifest are written to a
  pending place, made durable, and then published in one step (for a directory, one rename). A
  backup interrupted at any point (a killed process, a full disk) is never listed; what it left
  is pending, and `discard_stale` removes it later.
- A file is durable (fsync'd) before it is counted in a manifest; a manifest is written last.
- Deleting a backup first unpublishes it (rename to a hidden name), so a half-deleted backup is
  never listed either.
- Callers know only this interface, so an object-store target (S3 and the like) can follow
  without changing them: files go in as streams or local files and come back as local paths.

Layout of a directory target:
    TARGET/<database>/<backup id>/manifest.json, state.sqlite, log/<segment>.log
    TARGET/<database>/.pending-<backup id>/...   (being written, or interrupted)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpair.durable import fsync_dir, fsync_file, write_json

MANIFEST = "manifest.json"
PENDING = ".pending-"
DELETING = ".deleting-"
CHUNK = 1024 * 1024


class TargetError(Exception):
    """The target cannot be read or written as asked."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str  # path inside the backup, with '/' separators
    size: int
    sha256: str


class PendingBackup(ABC):
    """A backup being written: files go in, then commit publishes it with its manifest."""

    @abstractmethod
    def scratch(self) -> Path:
        """A local directory for large temporary files (a snapshot) that put_local then takes."""

    @abstractmethod
    def put_local(self, name: str, path: Path) -> StoredFile:
        """Take a complete local file (moved or uploaded) as NAME; returns its size and hash."""

    @abstractmethod
    def put_stream(self, name: str, chunks: Iterable[bytes]) -> StoredFile:
        """Write NAME from chunks, durably; returns its size and hash."""

    @abstractmethod
    def commit(self, manifest: dict[str, Any]) -> None:
        """Write the manifest and publish the backup in one step."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; the backup never becomes visible."""


class BackupTarget(ABC):
    """A place that holds backups of one or more databases."""

    @abstractmethod
    def describe(self) -> str:
        """How messages name this target."""

    @abstractmethod
    def databases(self) -> list[str]:
        """Databases with at least one complete backup (or pending one)."""

    @abstractmethod
    def backup_ids(self, database: str) -> list[str]:
        """Complete backups of DATABASE, oldest first (ids sort by start time)."""

    @abstractmethod
    def read_manifest(self, database: str, backup_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def local_file(self, database: str, backup_id: str, name: str) -> Path:
        """A local path to read NAME of a backup from (a directory target's own file; an
        object store would download it). TargetError if it is missing."""

    @abstractmethod
    def begin(self, database: str, backup_id: str) -> PendingBackup: ...

    @abstractmethod
    def delete(self, database: str, backup_id: str) -> None: ...

    @abstractmethod
    def discard_stale(self, database: str, older_than_s: float) -> list[str]:
        """Remove pending backups older than this (interrupted ones); returns their ids."""


def hash_file(path: Path) -> StoredFile:
    """Name, size and SHA-256 of a file, read in CHUNKs (a snapshot may be gigabytes)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return StoredFile(path.name, size, h.hexdigest())


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a local file."""
    s = hash_file(Path(path))
    return s.size, s.sha256


class _PendingDirectory(PendingBackup):
    def __init__(self, root: Path, final: Path):
        self.root = root
        self.final = final
        self._dirs: set[Path] = {root}

    def _path(self, name: str) -> Path:
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise TargetError(f"bad file name in a backup: {name}")
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._dirs.add(path.parent)
        return path

    def scratch(self) -> Path:
        d = self.root / ".scratch"
        d.mkdir(exist_ok=True)
        return d

    def put_local(self, name: str, path: Path) -> StoredFile:
        dest = self._path(name)
        os.replace(path, dest)  # the scratch directory is on the same file system
        fsync_file(dest)
        stored = hash_file(dest)
        return StoredFile(name, stored.size, stored.sha256)

    def put_stream(self, name: str, chunks: Iterable[bytes]) -> StoredFile:
        dest = self._path(name)
        h = hashlib.sha256()
        size = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                h.update(view)
                size += len(view)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return StoredFile(name, size, h.hexdigest())

    def commit(self, manifest: dict[str, Any]) -> None:
        shutil.rmtree(self.root / ".scratch", ignore_errors=True)
        for d in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(d)  # every file's directory entry is durable before the backup is published
        write_json(self.root / MANIFEST, manifest, indent=1, sort_keys=True)
        os.rename(self.root, self.final)
        fsync_dir(self.final.parent)

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class DirectoryTarget(BackupTarget):
    """A local or mounted directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _db(self, database: str) -> Path:
        return self.root / database

    def databases(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def backup_ids(self, database: str) -> list[str]:
        d = self._db(database)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())

    def read_manifest(self, database: str, backup_id: str) -> dict[str, Any]:
        path = self._db(database) / backup_id / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise TargetError(f"backup {backup_id}: {path} is missing") from None
        except ValueError as e:
            raise TargetError(f"backup {backup_id}: {path} is not a readable manifest ({e})") from None

    def local_file(self, database: str, backup_id: str, name: str) -> Path:
        path = self._db(database) / backup_id / name
        if not path.is_file():
            raise TargetError(f"backup {backup_id}: file {path} is missing")
        return path

    def begin(self, database: str, backup_id: str) -> PendingBackup:
        d = self._db(database)
        d.mkdir(parents=True, exist_ok=True)
        pending = d / f"{PENDING}{backup_id}"
        final = d / backup_id
        if final.exists() or pending.exists():
            raise TargetError(f"backup {backup_id} exists in {d}")
        pending.mkdir()
        fsync_dir(d)
        return _PendingDirectory(pending, final)

    def delete(self, database: str, backup_id: str) -> None:
        d = self._db(database)
        gone = d / f"{DELETING}{backup_id}"
        os.rename(d / backup_id, gone)  # unlisted first: a half-deleted backup never looks whole
        fsync_dir(d)
        shutil.rmtree(gone)

    def discard_stale(self, database: str, older_than_s: float) -> list[str]:
        d = self._db(database)
        if not d.is_dir():
            return []
        out = []
        now = time.time()
        for p in d.iterdir():
            for prefix in (PENDING, DELETING):
                if p.name.startswith(prefix) and now - p.stat().st_mtime >= older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
                    out.append(p.name[len(prefix) :])
        return out


def open_target(spec: str | Path) -> BackupTarget:
    """The target a command line names. Today a directory; a URL scheme picks another later."""
    return DirectoryTarget(Path(spec))
