"""Reads the IMAP session needs, as functions for `Database.read` (they run on the database's
reader thread, on its read-only connection). Reads that must agree with each other run inside
one transaction, so they see one snapshot even while the writer commits."""

from __future__ import annotations

import sqlite3
from typing import Any

from mailpair.store import names

MailboxRow = tuple[int, str, int, int, int, str | None]  # id, name, uidvalidity, uidnext, hms, special_use


def account(conn: sqlite3.Connection, user: str) -> tuple[str, int, int] | None:
    return conn.execute("SELECT password_hash, quota_bytes, used_bytes FROM accounts WHERE name=?", (user,)).fetchone()


def mailbox(conn: sqlite3.Connection, user: str, name: str) -> MailboxRow | None:
    return conn.execute(
        "SELECT id, name, uidvalidity, uidnext, highestmodseq, special_use FROM mailboxes WHERE account=? AND name=?",
        (user, names.normalise_mailbox(name)),
    ).fetchone()


def mailboxes(conn: sqlite3.Connection, user: str) -> tuple[list[tuple[str, str | None, int]], set[str]]:
    conn.execute("BEGIN")
    try:
        boxes = conn.execute("SELECT name, special_use, id FROM mailboxes WHERE account=? ORDER BY name", (user,)).fetchall()
        subs = {r[0] for r in conn.execute("SELECT name FROM subscriptions WHERE account=?", (user,))}
    finally:
        conn.execute("COMMIT")
    return boxes, subs


def snapshot(conn: sqlite3.Connection, box_id: int) -> tuple[MailboxRow | None, list[tuple[int, str, int]]]:
    """A mailbox and all its messages' (uid, flags, modseq), for SELECT."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT id, name, uidvalidity, uidnext, highestmodseq, special_use FROM mailboxes WHERE id=?", (box_id,)
        ).fetchone()
        msgs = conn.execute("SELECT uid, flags, modseq FROM messages WHERE mailbox_id=? ORDER BY uid", (box_id,)).fetchall()
    finally:
        conn.execute("COMMIT")
    return row, msgs


def select_facts(msgs: list[tuple[int, str, int]]) -> tuple[list[str], int | None]:
    """Keywords in use and the first unseen message's number, for SELECT's FLAGS and [UNSEEN]:
    distinct flag strings are few even in a big mailbox, so split each one once."""
    distinct = {m[1] for m in msgs}
    keywords = sorted({f for fs in distinct for f in fs.split() if not f.startswith("\\")})
    unseen_sets = {fs for fs in distinct if "\\Seen" not in fs.split()}
    first = next((i + 1 for i, m in enumerate(msgs) if m[1] in unseen_sets), None) if unseen_sets else None
    return keywords, first


def changes_since(
    conn: sqlite3.Connection, box_id: int, modseq: int
) -> tuple[MailboxRow | None, list[tuple[int, str, int]], list[int]]:
    """What changed in a mailbox after `modseq`: the mailbox row (None if it is gone), messages
    added or changed (uid, flags, modseq), and UIDs expunged."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(
            "SELECT id, name, uidvalidity, uidnext, highestmodseq, special_use FROM mailboxes WHERE id=?", (box_id,)
        ).fetchone()
        if row is None or row[4] <= modseq:
            return row, [], []
        msgs = conn.execute(
            "SELECT uid, flags, modseq FROM messages WHERE mailbox_id=? AND modseq>? ORDER BY uid", (box_id, modseq)
        ).fetchall()
        gone = [r[0] for r in conn.execute("SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>?", (box_id, modseq))]
    finally:
        conn.execute("COMMIT")
    return row, msgs, sorted(gone)


def expunged_since(conn: sqlite3.Connection, box_id: int, modseq: int) -> list[int]:
    return sorted(r[0] for r in conn.execute("SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>?", (box_id, modseq)))


def status(conn: sqlite3.Connection, user: str, name: str, recent_after: dict[int, int]) -> dict[str, Any] | None:
    conn.execute("BEGIN")
    try:
        row = mailbox(conn, user, name)
        if row is None:
            return None
        box_id = row[0]
        count, size, unseen, deleted = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0),"
            " COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' THEN 0 ELSE 1 END), 0),"
            " COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Deleted %' THEN 1 ELSE 0 END), 0)"
            " FROM messages WHERE mailbox_id=?",
            (box_id,),
        ).fetchone()
        recent = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE mailbox_id=? AND uid>?", (box_id, recent_after.get(box_id, 0))
        ).fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return {
        "id": box_id,
        "MESSAGES": count,
        "UIDNEXT": row[3],
        "UIDVALIDITY": row[2],
        "UNSEEN": unseen,
        "DELETED": deleted,
        "SIZE": size,
        "HIGHESTMODSEQ": row[4],
        "RECENT": recent,
    }


def flags_of(conn: sqlite3.Connection, box_id: int, uids: list[int]) -> dict[int, tuple[str, int]]:
    """uid -> (flags, modseq) for some messages."""
    out: dict[int, tuple[str, int]] = {}
    if not uids:
        return out
    lo, hi = uids[0], uids[-1]
    wanted = set(uids)
    for uid, flags, modseq in conn.execute(
        "SELECT uid, flags, modseq FROM messages WHERE mailbox_id=? AND uid BETWEEN ? AND ?", (box_id, lo, hi)
    ):
        if uid in wanted:
            out[uid] = (flags, modseq)
    return out


def message_raw(conn: sqlite3.Connection, box_id: int, uid: int) -> bytes | None:
    """A stored message's bytes, by mailbox and UID (CATENATE's URLs)."""
    row = conn.execute(
        "SELECT b.raw FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id=? AND m.uid=?", (box_id, uid)
    ).fetchone()
    return None if row is None else bytes(row[0])
