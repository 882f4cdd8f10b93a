"""A node's data directory as the node and the admin tools share it: the lock, the state file and
the start-failure marker.

Rules this module keeps: one process at a time writes a data directory (the node, or a CLI command
on a stopped node), held by an flock on DATA/node.lock; DATA/node.state.json exists exactly while
a node runs there and names its pid and bound ports; a node that cannot start says so on one log
line starting with START_FAILURE, which `pair up` looks for to show the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from mailpair.durable import write_json

# Written to the node's log when it cannot start; `pair up` looks for it to show the reason.
START_FAILURE = "cannot start: "

STATE_FILE = "node.state.json"


class DataDirLocked(Exception):
    pass


def lock_data_dir(data: Path) -> int:
    """Take the data directory's lock; raises DataDirLocked if a node process holds it. Returns
    the lock's file descriptor: closing it lets the directory go."""
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(f"{data} is in use by a running node") from None
    return fd


def read_state(data: Path) -> dict[str, Any] | None:
    """The running node's state (name, pid, role, ports), or None when no node runs there."""
    try:
        return json.loads((Path(data) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(data: Path, state: dict[str, Any]) -> None:
    write_json(Path(data) / STATE_FILE, state)


def clear_state(data: Path) -> None:
    (Path(data) / STATE_FILE).unlink(missing_ok=True)
