"""A digest of a database's content, equal on two copies exactly when they hold the same state at
the same LSN: accounts, mailboxes, subscriptions, messages (by content hash), flags, UIDs,
modseqs and the expunge history QRESYNC relies on. Ids that are internal to SQLite (blob ids) do
not enter it; mailbox ids do, since records name mailboxes by id."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from mailpair.store.schema import get_meta


def digest_connection(conn: sqlite3.Connection) -> dict:
    h = hashlib.sha256()

    def feed(*values) -> None:
        h.update(repr(values).encode())

    applied = get_meta(conn, "applied_lsn", 0)
    feed("applied", applied)
    for row in conn.execute("SELECT name, password_hash, quota_bytes, used_bytes, created_us FROM accounts ORDER BY name"):
        feed("account", *row)
    for row in conn.execute(
        "SELECT id, account, name, uidvalidity, uidnext, highestmodseq, special_use FROM mailboxes ORDER BY id"
    ):
        feed("mailbox", *row)
    for row in conn.execute("SELECT account, name FROM subscriptions ORDER BY account, name"):
        feed("sub", *row)
    counts = {"messages": 0}
    for mailbox_id, uid, flags, date, size, modseq, raw in conn.execute(
        "SELECT m.mailbox_id, m.uid, m.flags, m.internal_date_us, m.size, m.modseq, b.raw"
        " FROM messages m JOIN blobs b ON b.id = m.blob_id ORDER BY m.mailbox_id, m.uid"
    ):
        counts["messages"] += 1
        feed("msg", mailbox_id, uid, flags, date, size, modseq, hashlib.sha256(raw).hexdigest())
    for row in conn.execute("SELECT mailbox_id, uid, modseq FROM expunged ORDER BY mailbox_id, uid"):
        feed("expunged", *row)
    return {"applied_lsn": applied, "digest": h.hexdigest(), "messages": counts["messages"]}


def digest_database(path: Path) -> dict:
    """Digest of a database directory, read-only, without replaying anything."""
    conn = sqlite3.connect(f"file:{Path(path) / 'state.sqlite'}?mode=ro", uri=True)
    try:
        out = digest_connection(conn)
    finally:
        conn.close()
    return {"name": Path(path).name, **out}


def digest_node(data_dir: Path) -> dict:
    root = Path(data_dir) / "databases"
    dbs = sorted(p for p in root.iterdir() if (p / "id").exists()) if root.exists() else []
    return {"databases": [digest_database(p) for p in dbs]}
