"""Replay: applying records to the materialised database.

This is the only code that changes mailbox state. The active's writer calls `apply_records` for
what it has just decided, crash recovery for the log after the checkpoint, and the passive for the
records it received: one path, so the three cannot drift apart. Runs of deliveries are applied
together with multi-row statements, to the same state one by one would give (a property test
checks both ways against each other). Applying is deterministic: it reads nothing from the clock
or from chance, only the records and the current state.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import crc32c

from mailpair.store.records import RecordType
from mailpair.store.schema import get_meta, set_meta


class ReplayError(Exception):
    """A record cannot be applied to this state (it does not follow from it)."""


def _bump_meta_max(conn: sqlite3.Connection, key: str, value: int) -> None:
    if value > (get_meta(conn, key, 0) or 0):
        set_meta(conn, key, value)


def _create_mailboxes(conn: sqlite3.Connection, account: str, boxes: list, lsn: int) -> None:
    for box_id, name, uidvalidity, special_use in boxes:
        conn.execute(
            "INSERT INTO mailboxes (id, account, name, uidvalidity, uidnext, highestmodseq, special_use)"
            " VALUES (?, ?, ?, ?, 1, ?, ?)",
            (box_id, account, name, uidvalidity, lsn, special_use),
        )
        _bump_meta_max(conn, "next_mailbox_id", box_id + 1)
        _bump_meta_max(conn, "last_uidvalidity", uidvalidity)


def _release_blobs(conn: sqlite3.Connection, blob_ids: list[int]) -> None:
    for blob_id in blob_ids:
        conn.execute("UPDATE blobs SET refs = refs - 1 WHERE id=?", (blob_id,))
    conn.execute("DELETE FROM blobs WHERE refs <= 0")


def _remove_messages(conn: sqlite3.Connection, mailbox_id: int, uids: list[int], lsn: int, remember: bool) -> int:
    """Remove messages; returns the bytes they took. remember: keep them as expunged for QRESYNC."""
    freed = 0
    blob_ids = []
    for uid in uids:
        row = conn.execute("SELECT blob_id, size FROM messages WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
        if row is None:
            raise ReplayError(f"message {mailbox_id}/{uid} does not exist")
        blob_ids.append(row[0])
        freed += row[1]
        conn.execute("DELETE FROM messages WHERE mailbox_id=? AND uid=?", (mailbox_id, uid))
        if remember:
            conn.execute(
                "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                (mailbox_id, uid, lsn),
            )
    _release_blobs(conn, blob_ids)
    return freed


def _account_of(conn: sqlite3.Connection, mailbox_id: int) -> str:
    row = conn.execute("SELECT account FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
    if row is None:
        raise ReplayError(f"mailbox {mailbox_id} does not exist")
    return row[0]


def _touch(conn: sqlite3.Connection, mailbox_id: int, lsn: int, uidnext: int | None = None) -> None:
    if uidnext is None:
        cur = conn.execute("UPDATE mailboxes SET highestmodseq=? WHERE id=?", (lsn, mailbox_id))
    else:
        cur = conn.execute("UPDATE mailboxes SET highestmodseq=?, uidnext=MAX(uidnext, ?) WHERE id=?", (lsn, uidnext, mailbox_id))
    if cur.rowcount != 1:
        raise ReplayError(f"mailbox {mailbox_id} does not exist")


def _add_used(conn: sqlite3.Connection, account: str, delta: int) -> None:
    conn.execute("UPDATE accounts SET used_bytes = used_bytes + ? WHERE name=?", (delta, account))


def _copy_messages(conn: sqlite3.Connection, src: int, dst: int, pairs: list, lsn: int) -> int:
    added = 0
    for src_uid, dst_uid in pairs:
        row = conn.execute(
            "SELECT blob_id, flags, internal_date_us, size FROM messages WHERE mailbox_id=? AND uid=?",
            (src, src_uid),
        ).fetchone()
        if row is None:
            raise ReplayError(f"message {src}/{src_uid} does not exist")
        blob_id, flags, date, size = row
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, blob_id, flags, internal_date_us, size, modseq) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (dst, dst_uid, blob_id, flags, date, size, lsn),
        )
        conn.execute("UPDATE blobs SET refs = refs + 1 WHERE id=?", (blob_id,))
        added += size
    if pairs:
        _touch(conn, dst, lsn, max(d for _, d in pairs) + 1)
    return added


# Multi-row statements for a run of deliveries: one SQLite call (and one hand-over of the GIL)
# for many rows. Chunk sizes are powers of two so a handful of statements serve every run.
_CHUNK = 64
_BLOB_SQL = "INSERT INTO blobs (id, refs, size, crc, raw, envelope, bodystructure) VALUES "
_MESSAGE_SQL = "INSERT INTO messages (mailbox_id, uid, blob_id, flags, internal_date_us, size, modseq) VALUES "


def _insert_rows(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple]) -> None:
    group = "(" + ",".join("?" * width) + ")"
    i = 0
    while i < len(rows):
        n = min(_CHUNK, 1 << ((len(rows) - i).bit_length() - 1))
        chunk = rows[i : i + n]
        conn.execute(head + ",".join([group] * n), [v for row in chunk for v in row])
        i += n


def apply_deliveries(conn: sqlite3.Connection, run: list[tuple[dict[str, Any], int]]) -> None:
    """Apply consecutive DELIVER/APPEND records, (payload, lsn) in LSN order. The state after is
    the state applying them one by one would leave: each message row and blob as the record says,
    each mailbox's UIDNEXT the highest UID + 1 and HIGHESTMODSEQ the last LSN that touched it, each
    account's usage the sum of its new messages."""
    blobs: list[tuple] = []
    messages: list[tuple] = []
    touched: dict[int, list[int]] = {}  # mailbox id -> [last lsn, uidnext]
    used: dict[str, int] = {}
    for p, lsn in run:
        raw = p["raw"]
        size = len(raw)
        targets = p["targets"]
        blobs.append((lsn, len(targets), size, crc32c.crc32c(raw), raw, p["env"], p["bs"]))
        flags = " ".join(p["flags"])
        for account, box_id, uid in targets:
            messages.append((box_id, uid, lsn, flags, p["date"], size, lsn))
            t = touched.get(box_id)
            if t is None:
                touched[box_id] = [lsn, uid + 1]
            else:
                t[0] = lsn
                t[1] = max(t[1], uid + 1)
            used[account] = used.get(account, 0) + size
    _insert_rows(conn, _BLOB_SQL, 7, blobs)
    _insert_rows(conn, _MESSAGE_SQL, 7, messages)
    cur = conn.executemany(
        "UPDATE mailboxes SET highestmodseq=?, uidnext=MAX(uidnext, ?) WHERE id=?",
        [(lsn, uidnext, box_id) for box_id, (lsn, uidnext) in touched.items()],
    )
    if cur.rowcount != len(touched):
        raise ReplayError(f"a mailbox of {sorted(touched)} does not exist")
    conn.executemany("UPDATE accounts SET used_bytes = used_bytes + ? WHERE name=?", [(v, k) for k, v in used.items()])


_DELIVERIES = (RecordType.DELIVER, RecordType.APPEND)


def apply_records(conn: sqlite3.Connection, items: list[tuple[int, dict[str, Any], int, int]]) -> None:
    """Apply decoded records (type, payload, lsn, timestamp_us) in order: runs of deliveries
    together, anything else one by one. The caller owns the transaction and the applied LSN.
    The active's writer, crash recovery and the passive's replay all come here."""
    run: list[tuple[dict[str, Any], int]] = []
    for rtype, payload, lsn, ts in items:
        if rtype in _DELIVERIES:
            run.append((payload, lsn))
            continue
        if run:
            apply_deliveries(conn, run)
            run = []
        apply_record(conn, rtype, payload, lsn, ts)
    if run:
        apply_deliveries(conn, run)


def apply_record(conn: sqlite3.Connection, rtype: int, p: dict[str, Any], lsn: int, timestamp_us: int) -> None:
    """Apply one decoded record. The caller owns the transaction and the applied LSN."""
    t = RecordType(rtype)
    if t is RecordType.ACCOUNT_ADD:
        conn.execute(
            "INSERT INTO accounts (name, password_hash, quota_bytes, used_bytes, created_us) VALUES (?, ?, ?, 0, ?)",
            (p["name"], p["hash"], p["quota"], timestamp_us),
        )
        _create_mailboxes(conn, p["name"], p["boxes"], lsn)
        for _, name, _, _ in p["boxes"]:
            conn.execute("INSERT OR IGNORE INTO subscriptions (account, name) VALUES (?, ?)", (p["name"], name))
    elif t is RecordType.ACCOUNT_DEL:
        ids = [r[0] for r in conn.execute("SELECT id FROM mailboxes WHERE account=?", (p["name"],))]
        for box_id in ids:
            uids = [r[0] for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id=?", (box_id,))]
            _remove_messages(conn, box_id, uids, lsn, remember=False)
            conn.execute("DELETE FROM expunged WHERE mailbox_id=?", (box_id,))
        conn.execute("DELETE FROM mailboxes WHERE account=?", (p["name"],))
        conn.execute("DELETE FROM subscriptions WHERE account=?", (p["name"],))
        conn.execute("DELETE FROM accounts WHERE name=?", (p["name"],))
    elif t is RecordType.ACCOUNT_PASSWD:
        conn.execute("UPDATE accounts SET password_hash=? WHERE name=?", (p["hash"], p["name"]))
    elif t is RecordType.QUOTA_SET:
        conn.execute("UPDATE accounts SET quota_bytes=? WHERE name=?", (p["quota"], p["name"]))
    elif t is RecordType.MAILBOX_CREATE:
        _create_mailboxes(conn, p["account"], p["boxes"], lsn)
    elif t is RecordType.MAILBOX_RENAME:
        if p.get("inbox_to"):
            new_id, name, uidvalidity = p["inbox_to"]
            inbox = conn.execute("SELECT id, uidnext FROM mailboxes WHERE account=? AND name='INBOX'", (p["account"],)).fetchone()
            _create_mailboxes(conn, p["account"], [[new_id, name, uidvalidity, None]], lsn)
            conn.execute("UPDATE messages SET mailbox_id=?, modseq=? WHERE mailbox_id=?", (new_id, lsn, inbox[0]))
            conn.execute("UPDATE mailboxes SET uidnext=? WHERE id=?", (inbox[1], new_id))
            for (uid,) in conn.execute("SELECT uid FROM messages WHERE mailbox_id=?", (new_id,)).fetchall():
                conn.execute("INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)", (inbox[0], uid, lsn))
            _touch(conn, inbox[0], lsn)
        _create_mailboxes(conn, p["account"], p.get("parents", []), lsn)
        for box_id, new_name in p.get("renames", []):
            conn.execute("UPDATE mailboxes SET name=? WHERE id=?", (new_name, box_id))
    elif t is RecordType.MAILBOX_DELETE:
        box_id = p["id"]
        account = _account_of(conn, box_id)
        uids = [r[0] for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id=?", (box_id,))]
        freed = _remove_messages(conn, box_id, uids, lsn, remember=False)
        _add_used(conn, account, -freed)
        conn.execute("DELETE FROM expunged WHERE mailbox_id=?", (box_id,))
        conn.execute("DELETE FROM mailboxes WHERE id=?", (box_id,))
    elif t is RecordType.SUBSCRIBE:
        if p["on"]:
            conn.execute("INSERT OR IGNORE INTO subscriptions (account, name) VALUES (?, ?)", (p["account"], p["name"]))
        else:
            conn.execute("DELETE FROM subscriptions WHERE account=? AND name=?", (p["account"], p["name"]))
    elif t in (RecordType.DELIVER, RecordType.APPEND):
        apply_deliveries(conn, [(p, lsn)])
    elif t is RecordType.FLAGS:
        box_id = p["mailbox"]
        for uid, flags in p["changes"]:
            cur = conn.execute("UPDATE messages SET flags=?, modseq=? WHERE mailbox_id=? AND uid=?", (flags, lsn, box_id, uid))
            if cur.rowcount != 1:
                raise ReplayError(f"message {box_id}/{uid} does not exist")
        _touch(conn, box_id, lsn)
    elif t is RecordType.COPY:
        added = _copy_messages(conn, p["src"], p["dst"], p["pairs"], lsn)
        _add_used(conn, _account_of(conn, p["dst"]), added)
    elif t is RecordType.MOVE:
        _copy_messages(conn, p["src"], p["dst"], p["pairs"], lsn)
        # The bytes stay in the same account, so usage does not change.
        _remove_messages(conn, p["src"], [s for s, _ in p["pairs"]], lsn, remember=True)
        _touch(conn, p["src"], lsn)
    elif t is RecordType.EXPUNGE:
        box_id = p["mailbox"]
        freed = _remove_messages(conn, box_id, p["uids"], lsn, remember=True)
        _add_used(conn, _account_of(conn, box_id), -freed)
        _touch(conn, box_id, lsn)
    elif t is RecordType.EPOCH:
        set_meta(conn, "epoch", p["epoch"])
    else:  # pragma: no cover - RecordType() already refused unknown values
        raise ReplayError(f"unknown record type {rtype}")
