"""Durable small files: the one way mailpair replaces a file so that a crash leaves the old
content or the new, never a mix or nothing.

Rules this module keeps:
- The new content goes to a temporary file beside the target, is fsync'd, and is renamed over
  the target; the directory is then fsync'd, so the rename itself survives a crash.
- Files are created 0600 (they hold secrets, password hashes or mail) unless a caller says else.
- A temporary file left by a crash ends in `.tmp`; readers ignore it and the next write replaces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path | str) -> None:
    """Make the directory's entries (a create, rename or unlink in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path | str, data: bytes | str, mode: int = 0o600) -> None:
    """Replace path's content with data durably: temp file, fsync, rename, fsync of the directory."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is cut by the umask and ignored for a file left by a crash
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path | str, value: Any, mode: int = 0o600, **dumps: Any) -> None:
    """write_atomic of value as JSON (with a final newline)."""
    write_atomic(path, json.dumps(value, **dumps) + "\n", mode)
