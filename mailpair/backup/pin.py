"""The backup pin: after a backup is published, each node's copy of the database is told the
first LSN that no backup holds yet, so its log truncation keeps it (DESIGN.md rule 4).

Rules this module keeps: the pin is a small file beside the database's own pins
(store/database.py reads it as the pin named "backup"), written durably and atomically by the
backup tool, which runs beside the node; it moves only forward, and only for the same database
(same id). It also says when and where the last backup was taken, for status. While it exists
the log keeps everything after the last backup, so when backups stop for good, `mailpair backup
unpin` removes it.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from mailpair.durable import fsync_dir, write_json
from mailpair.store.database import BACKUP_PIN_FILE


def pin_backed_up(data_dirs: list[Path], database: str, manifest: dict[str, Any]) -> list[Path]:
    """Pin LSN last_lsn + 1 in DATA/databases/DATABASE of each data directory that holds this
    database. Returns the directories pinned."""
    out = []
    for data in data_dirs:
        d = Path(data) / "databases" / database
        try:
            if uuid.UUID((d / "id").read_text().strip()) != uuid.UUID(manifest["db_id"]):
                continue
        except (OSError, ValueError):
            continue
        try:
            old = json.loads((d / BACKUP_PIN_FILE).read_text())
        except (OSError, ValueError):
            old = {}
        pin = max(int(manifest["last_lsn"]) + 1, int(old.get("lsn", 0)))
        write_json(
            d / BACKUP_PIN_FILE,
            {
                "lsn": pin,
                "id": manifest["id"],
                "kind": manifest["kind"],
                "finished": manifest["finished"],
                "finished_ts": time.time(),
            },
            sort_keys=True,
        )
        out.append(d)
    return out


def unpin(data_dirs: list[Path], database: str | None = None) -> list[Path]:
    """Stop backups holding the log: remove the backup pin of DATABASE (or every database) in
    each data directory. Returns the files removed. Truncation then follows the other pins."""
    out = []
    for data in data_dirs:
        root = Path(data) / "databases"
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            pin = d / BACKUP_PIN_FILE
            if (database is None or d.name == database) and pin.exists():
                pin.unlink()
                fsync_dir(d)
                out.append(pin)
    return out
