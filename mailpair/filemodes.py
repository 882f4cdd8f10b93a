"""Private file modes: a node's data directory holds mail, password hashes and the pair's secret,
so only the account that runs mailpair may read it.

Rules this module keeps:
- Every mailpair process creates files 0600 and directories 0700 (`private_umask`, set by the
  command line before anything is written), whoever writes them: SQLite, the log, the CLI.
- A node tightens its data directory at start (a directory made by an older version, or copied
  with looser modes, is mended and the mending logged); `mailpair verify` reports what is looser.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger("mailpair.node")

PRIVATE_UMASK = 0o077
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def loose(root: Path) -> list[tuple[Path, int]]:
    """Files and directories under root (root included) that group or others may use."""
    root = Path(root)
    out = []
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # gone meanwhile (a temporary file)
            continue
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue  # a link's mode means nothing; a socket's is set where it is made
        if st.st_mode & _OTHERS:
            out.append((path, stat.S_IMODE(st.st_mode)))
    return out


def tighten(root: Path) -> int:
    """Take group and other permissions off everything under root; returns how many changed."""
    changed = 0
    for path, mode in loose(root):
        try:
            os.chmod(path, mode & ~_OTHERS)
        except FileNotFoundError:
            continue
        changed += 1
        logger.warning(
            "data directory: %s was mode %04o, now %04o (only the node's account may read it)", path, mode, mode & ~_OTHERS
        )
    return changed
