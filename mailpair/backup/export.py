"""Export from a recovery database: one account's folders (or one folder) as mbox or Maildir,
the formats other mail tools read (Python's mailbox module, mutt, Dovecot, Thunderbird).

Rules this module keeps: the data directory is only read (SQLite read-only), so exporting from a
restore, or even from a node's directory, changes nothing; messages go out as they were stored (Maildir:
byte for byte but for the local line ending; mbox: with its From_ lines and escaping), in UID
order, with their IMAP flags mapped to the format's own (Seen, Answered,
Flagged, Deleted, Draft); the destination must not exist, so nothing is overwritten.
"""

from __future__ import annotations

import mailbox
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_MAILDIR_FLAGS = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
_MBOX_FLAGS = {"\\Seen": "RO", "\\Answered": "A", "\\Flagged": "F", "\\Deleted": "D", "\\Draft": ""}


class ExportError(Exception):
    """The export cannot be done as asked."""


@dataclass(frozen=True)
class Exported:
    folders: dict[str, int]  # folder -> messages written
    bytes: int


def _open(data: Path, database: str | None) -> list[Path]:
    root = Path(data) / "databases"
    dbs = sorted(p for p in root.iterdir() if (p / "state.sqlite").exists()) if root.is_dir() else []
    if database is not None:
        dbs = [p for p in dbs if p.name == database]
    if not dbs:
        raise ExportError(f"{data} holds no database" + (f" named {database}" if database else ""))
    return dbs


def _write_mbox(path: Path, rows) -> tuple[int, int]:
    box = mailbox.mbox(path, create=True)
    box.lock()
    n = size = 0
    try:
        for raw, flags in rows:
            msg = mailbox.mboxMessage(bytes(raw))
            msg.set_flags("".join(_MBOX_FLAGS.get(f, "") for f in str(flags).split()))
            box.add(msg)
            n, size = n + 1, size + len(raw)
        box.flush()
    finally:
        box.unlock()
        box.close()
    return n, size


def _write_maildir(path: Path, rows, box_id: int) -> tuple[int, int]:
    """Each message as its own file in cur/, its bytes unchanged but for the line ending (LF, as
    files on this system use), its flags in its name (the Maildir convention)."""
    mailbox.Maildir(path, create=True)  # tmp/, new/, cur/
    n = size = 0
    for seq, (raw, flags) in enumerate(rows, 1):
        info = "".join(sorted(_MAILDIR_FLAGS.get(f, "") for f in str(flags).split()))
        name = f"{int(time.time())}.M{box_id}N{seq}.mailpair-recovery:2,{info}"
        tmp = path / "tmp" / name
        tmp.write_bytes(bytes(raw).replace(b"\r\n", b"\n"))
        os.rename(tmp, path / "cur" / name)
        n, size = n + 1, size + len(raw)
    return n, size


def export_account(
    data: Path, user: str, dest: Path, fmt: str, folder: str | None = None, database: str | None = None
) -> Exported:
    """Write USER's folders (or FOLDER) from DATA to DEST: for mbox, DEST/<folder>.mbox files;
    for maildir, DEST/<folder>/ Maildirs."""
    if fmt not in ("mbox", "maildir"):
        raise ExportError(f"unknown format {fmt}: mbox or maildir")
    dest = Path(dest)
    if dest.exists():
        raise ExportError(f"{dest} exists; export writes a new directory")
    for db in _open(data, database):
        conn = sqlite3.connect(f"file:{db / 'state.sqlite'}?mode=ro", uri=True)
        try:
            boxes = conn.execute("SELECT id, name FROM mailboxes WHERE account=? ORDER BY name", (user,)).fetchall()
            if not boxes:
                continue
            if folder is not None:
                boxes = [b for b in boxes if b[1] == folder]
                if not boxes:
                    raise ExportError(f"account {user} has no folder {folder}")
            dest.mkdir(parents=True)
            counts: dict[str, int] = {}
            total = 0
            for box_id, name in boxes:
                rows = conn.execute(
                    "SELECT b.raw, m.flags FROM messages m JOIN blobs b ON b.id=m.blob_id WHERE m.mailbox_id=? ORDER BY m.uid",
                    (box_id,),
                )
                safe = name.replace("/", ".")
                if fmt == "mbox":
                    n, size = _write_mbox(dest / f"{safe}.mbox", rows)
                else:
                    n, size = _write_maildir(dest / safe, rows, box_id)
                total += size
                counts[name] = n
            return Exported(counts, total)
        finally:
            conn.close()
    raise ExportError(f"no account {user} in {data}")
