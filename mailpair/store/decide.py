"""Deciding: turning a requested operation into a record payload, on the active only.

Each function reads the current state (inside the writer's open transaction, so it sees the
effect of earlier operations in the same group commit), checks the request, and returns
(payload, result): payload is what goes into the log and is applied, result is what the caller is
told. A payload of None means there is nothing to write (for example STORE that changes nothing).
Checks that fail raise a StoreError subclass and write nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from mailpair.store import names
from mailpair.store.errors import (
    AccountExists,
    MailboxExists,
    NoSuchAccount,
    NoSuchMailbox,
    OverQuota,
    StoreError,
)
from mailpair.store.records import RecordType
from mailpair.store.schema import get_meta

DEFAULT_MAILBOXES = [
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
]

Decision = tuple[dict[str, Any] | None, Any]


class Allocator:
    """The writer's view of one group commit. It hands out mailbox ids and UIDVALIDITY values (the
    persisted counters are advanced by apply, so a replayed record leaves the same counters behind),
    and it holds what deliveries decided but the writer has not applied yet: deliveries are applied
    together, so the next delivery's UIDs and quota must count the ones before it."""

    def __init__(self, conn: sqlite3.Connection, now_us: int, epoch: int = 1):
        self.conn = conn
        self.now_s = now_us // 1_000_000
        self.epoch = epoch  # the epoch the next record is written in (an EPOCH record raises it)
        self._uidnext: dict[int, int] = {}  # mailbox id -> next UID after the deferred deliveries
        self._added: dict[str, int] = {}  # account -> bytes the deferred deliveries add
        self._rows: dict[tuple[str, str], tuple | None] = {}  # (account, mailbox) -> state row

    def mailbox_id(self) -> int:
        return get_meta(self.conn, "next_mailbox_id", 1)

    def uidvalidity(self) -> int:
        last = get_meta(self.conn, "last_uidvalidity", 0)
        return max(self.now_s & 0xFFFFFFFF, last + 1)

    def boxes(self, names_and_uses: list[tuple[str, str | None]]) -> list[list]:
        first_id, first_uv = self.mailbox_id(), self.uidvalidity()
        return [[first_id + i, n, first_uv + i, use] for i, (n, use) in enumerate(names_and_uses)]

    def target(self, account: str, mailbox: str) -> tuple[int, int, int, int, int] | None:
        """(quota, used, mailbox id, uidvalidity, uidnext) with the deferred deliveries counted;
        None when the mailbox does not exist; NoSuchAccount when the account does not."""
        key = (account, mailbox)
        if key in self._rows:
            row = self._rows[key]
        else:
            row = self.conn.execute(
                "SELECT a.quota_bytes, a.used_bytes, m.id, m.uidvalidity, m.uidnext FROM accounts a"
                " LEFT JOIN mailboxes m ON m.account = a.name AND m.name = ? WHERE a.name = ?",
                (mailbox, account),
            ).fetchone()
            self._rows[key] = row
        if row is None:
            raise NoSuchAccount(f"no such account: {account}")
        quota, used, box_id, uidvalidity, uidnext = row
        if box_id is None:
            return None
        return quota, used + self._added.get(account, 0), box_id, uidvalidity, max(uidnext, self._uidnext.get(box_id, 0))

    def deferred(self, payload: dict[str, Any]) -> None:
        """A delivery's record is written but applied later, with the others of its run."""
        size = len(payload["raw"])
        for account, box_id, uid in payload["targets"]:
            self._uidnext[box_id] = max(self._uidnext.get(box_id, 0), uid + 1)
            self._added[account] = self._added.get(account, 0) + size

    def applied(self) -> None:
        """The deferred deliveries are in the state now: read it afresh."""
        self._uidnext.clear()
        self._added.clear()
        self._rows.clear()


def _account(conn: sqlite3.Connection, name: str) -> tuple[int, int]:
    row = conn.execute("SELECT quota_bytes, used_bytes FROM accounts WHERE name=?", (name,)).fetchone()
    if row is None:
        raise NoSuchAccount(f"no such account: {name}")
    return row


def _mailbox(conn: sqlite3.Connection, account: str, name: str) -> tuple[int, int, int]:
    """(id, uidvalidity, uidnext) of a mailbox, or NoSuchMailbox."""
    row = conn.execute(
        "SELECT id, uidvalidity, uidnext FROM mailboxes WHERE account=? AND name=?",
        (account, names.normalise_mailbox(name)),
    ).fetchone()
    if row is None:
        raise NoSuchMailbox(f"no such mailbox: {name}")
    return row


def _check_quota(conn: sqlite3.Connection, account: str, add: int) -> None:
    _refuse_over_quota(account, *_account(conn, account), add)


def _refuse_over_quota(account: str, quota: int, used: int, add: int) -> None:
    if quota and used + add > quota:
        raise OverQuota(f"mailbox of {account} is over quota ({used + add} > {quota} bytes)")


def _missing_parents(conn: sqlite3.Connection, account: str, name: str) -> list[str]:
    parts = name.split(names.DELIMITER)
    out = []
    for i in range(1, len(parts)):
        parent = names.DELIMITER.join(parts[:i])
        if conn.execute("SELECT 1 FROM mailboxes WHERE account=? AND name=?", (account, parent)).fetchone() is None:
            out.append(parent)
    return out


def _messages(conn: sqlite3.Connection, box_id: int, uids: list[int] | None) -> list[tuple]:
    sql = "SELECT uid, flags, size, modseq FROM messages WHERE mailbox_id=?"
    if uids is None:
        return conn.execute(sql + " ORDER BY uid", (box_id,)).fetchall()
    # Only the rows asked for, by primary key: this runs on the single writer thread, and a scan
    # of the whole mailbox for a one-message STORE held up every write queued behind it.
    wanted = sorted(set(uids))
    rows: list[tuple] = []
    for i in range(0, len(wanted), 500):
        part = wanted[i : i + 500]
        rows += conn.execute(sql + f" AND uid IN ({','.join('?' * len(part))}) ORDER BY uid", (box_id, *part)).fetchall()
    return rows


# ---------------------------------------------------------------------------- accounts
def account_add(conn, alloc, a) -> Decision:
    name = names.check_user(a["name"])
    if conn.execute("SELECT 1 FROM accounts WHERE name=?", (name,)).fetchone():
        raise AccountExists(f"account {name} exists")
    boxes = alloc.boxes(DEFAULT_MAILBOXES)
    return {"name": name, "hash": a["hash"], "quota": int(a.get("quota", 0)), "boxes": boxes}, {"name": name}


def account_del(conn, alloc, a) -> Decision:
    _account(conn, a["name"])
    return {"name": a["name"]}, {"name": a["name"]}


def account_passwd(conn, alloc, a) -> Decision:
    _account(conn, a["name"])
    return {"name": a["name"], "hash": a["hash"]}, {"name": a["name"]}


def quota_set(conn, alloc, a) -> Decision:
    _account(conn, a["name"])
    quota = int(a["quota"])
    if quota < 0:
        raise StoreError("quota must be 0 (unlimited) or a positive number of bytes")
    return {"name": a["name"], "quota": quota}, {"name": a["name"], "quota": quota}


# ---------------------------------------------------------------------------- mailboxes
def mailbox_create(conn, alloc, a) -> Decision:
    account = a["account"]
    _account(conn, account)
    name = names.check_mailbox(a["name"])
    if conn.execute("SELECT 1 FROM mailboxes WHERE account=? AND name=?", (account, name)).fetchone():
        raise MailboxExists(f"mailbox {name} exists")
    use = a.get("special_use")
    if use is not None and use not in {u for _, u in DEFAULT_MAILBOXES if u} | {"\\All", "\\Flagged"}:
        raise StoreError(f"unknown special use {use}")
    boxes = alloc.boxes([(p, None) for p in _missing_parents(conn, account, name)] + [(name, use)])
    return {"account": account, "boxes": boxes}, {"id": boxes[-1][0], "uidvalidity": boxes[-1][2]}


def mailbox_rename(conn, alloc, a) -> Decision:
    account = a["account"]
    old = names.normalise_mailbox(a["old"])
    new = names.check_mailbox(a["new"])
    src_id, _, _ = _mailbox(conn, account, old)
    if conn.execute("SELECT 1 FROM mailboxes WHERE account=? AND name=?", (account, new)).fetchone():
        raise MailboxExists(f"mailbox {new} exists")
    if new == old or new.startswith(old + names.DELIMITER):
        raise StoreError("cannot rename a mailbox into itself")
    payload: dict[str, Any] = {"account": account, "renames": [], "parents": []}
    parents = _missing_parents(conn, account, new)
    if old == "INBOX":
        # RFC 3501 6.3.5: renaming INBOX moves its messages to a new mailbox and leaves INBOX empty.
        boxes = alloc.boxes([(new, None)] + [(p, None) for p in parents])
        payload["inbox_to"] = boxes[0][:3]
        payload["parents"] = boxes[1:]
        return payload, {"id": boxes[0][0]}
    payload["parents"] = alloc.boxes([(p, None) for p in parents])
    prefix = old + names.DELIMITER
    for box_id, name in conn.execute("SELECT id, name FROM mailboxes WHERE account=?", (account,)).fetchall():
        if box_id == src_id:
            payload["renames"].append([box_id, new])
        elif name.startswith(prefix):
            payload["renames"].append([box_id, new + name[len(old) :]])
    return payload, {"id": src_id}


def mailbox_delete(conn, alloc, a) -> Decision:
    name = names.normalise_mailbox(a["name"])
    if name == "INBOX":
        raise StoreError("INBOX cannot be deleted")
    box_id, _, _ = _mailbox(conn, a["account"], name)
    return {"id": box_id}, {"id": box_id}


def subscribe(conn, alloc, a) -> Decision:
    _account(conn, a["account"])
    name = names.check_mailbox(a["name"])
    return {"account": a["account"], "name": name, "on": bool(a["on"])}, {}


# ---------------------------------------------------------------------------- messages
def deliver(conn, alloc, a) -> Decision:
    """Deliver one message to several recipients. Each recipient succeeds or fails on its own:
    result["results"] has, in order, ("ok", mailbox, uid) or ("error", StoreError)."""
    raw: bytes = a["raw"]
    results: list[tuple] = []
    targets: list[list] = []
    seen: dict[tuple[str, int], tuple] = {}
    pending: dict[str, int] = {}
    for user, folder in a["recipients"]:
        try:
            box = alloc.target(user, names.normalise_mailbox(folder)) if folder else None
            if box is None:
                box = alloc.target(user, "INBOX")
                folder = "INBOX"
                if box is None:
                    raise NoSuchMailbox("no such mailbox: INBOX")
            quota, used, box_id, _uidvalidity, uidnext = box
            key = (user, box_id)
            if key in seen:
                results.append(seen[key])
                continue
            if quota and used + pending.get(user, 0) + len(raw) > quota:
                raise OverQuota(f"mailbox of {user} is over quota")
            targets.append([user, box_id, uidnext])
            pending[user] = pending.get(user, 0) + len(raw)
            res = ("ok", folder, uidnext)
            seen[key] = res
            results.append(res)
        except StoreError as e:
            results.append(("error", e))
    if not targets:
        return None, {"results": results}
    payload = {
        "raw": raw,
        "env": a["env"],
        "bs": a["bs"],
        "date": a["date"],
        "flags": sorted(a.get("flags", ())),
        "targets": targets,
    }
    return payload, {"results": results}


def append(conn, alloc, a) -> Decision:
    account, raw = a["account"], a["raw"]
    box = alloc.target(account, names.normalise_mailbox(a["mailbox"]))
    if box is None:
        raise NoSuchMailbox(f"no such mailbox: {a['mailbox']}")
    quota, used, box_id, uidvalidity, uidnext = box
    _refuse_over_quota(account, quota, used, len(raw))
    flags = sorted({names.check_flag(f) for f in a.get("flags", ())})
    payload = {
        "raw": raw,
        "env": a["env"],
        "bs": a["bs"],
        "date": a["date"],
        "flags": flags,
        "targets": [[account, box_id, uidnext]],
    }
    return payload, {"uidvalidity": uidvalidity, "uid": uidnext, "mailbox_id": box_id}


def store_flags(conn, alloc, a) -> Decision:
    """mode: "set" | "add" | "remove". unchanged_since (CONDSTORE) refuses messages changed
    after it; they are listed in result["modified"]."""
    box_id, _, _ = _mailbox(conn, a["account"], a["mailbox"])
    flags = {names.check_flag(f) for f in a["flags"]}
    mode = a["mode"]
    since = a.get("unchanged_since")
    changes, modified, unchanged = [], [], []
    for uid, old_s, _size, modseq in _messages(conn, box_id, a["uids"]):
        if since is not None and modseq > since:
            modified.append(uid)
            continue
        old = set(old_s.split()) if old_s else set()
        new = flags if mode == "set" else (old | flags if mode == "add" else old - flags)
        if new == old:
            unchanged.append(uid)
            continue
        changes.append([uid, " ".join(sorted(new))])
    result = {"changed": [c[0] for c in changes], "modified": modified, "unchanged": unchanged, "mailbox_id": box_id}
    if not changes:
        return None, result
    return {"mailbox": box_id, "changes": changes}, result


def _copy_pairs(conn, a) -> tuple[int, int, int, list[list[int]], int]:
    account = a["account"]
    src_id, _, _ = _mailbox(conn, account, a["src"])
    dst_id, dst_uv, dst_next = _mailbox(conn, account, a["dst"])
    rows = _messages(conn, src_id, a["uids"])
    pairs = [[uid, dst_next + i] for i, (uid, _f, _s, _m) in enumerate(rows)]
    return src_id, dst_id, dst_uv, pairs, sum(r[2] for r in rows)


def copy(conn, alloc, a) -> Decision:
    src_id, dst_id, dst_uv, pairs, size = _copy_pairs(conn, a)
    result = {"uidvalidity": dst_uv, "pairs": pairs, "src_id": src_id, "dst_id": dst_id}
    if not pairs:
        return None, result
    _check_quota(conn, a["account"], size)
    return {"src": src_id, "dst": dst_id, "pairs": pairs}, result


def move(conn, alloc, a) -> Decision:
    src_id, dst_id, dst_uv, pairs, _ = _copy_pairs(conn, a)
    # Into the same mailbox is allowed (RFC 6851 3.3): apply copies under new UIDs, then removes
    # the originals.
    result = {"uidvalidity": dst_uv, "pairs": pairs, "src_id": src_id, "dst_id": dst_id}
    if not pairs:
        return None, result
    return {"src": src_id, "dst": dst_id, "pairs": pairs}, result


def expunge(conn, alloc, a) -> Decision:
    """Remove the messages flagged \\Deleted (only those in uids, when given: UID EXPUNGE)."""
    box_id, _, _ = _mailbox(conn, a["account"], a["mailbox"])
    uids = [uid for uid, flags, _s, _m in _messages(conn, box_id, a.get("uids")) if "\\Deleted" in flags.split()]
    result = {"uids": uids, "mailbox_id": box_id}
    if not uids:
        return None, result
    return {"mailbox": box_id, "uids": uids}, result


def epoch(conn, alloc, a) -> Decision:
    """Begin a new epoch: the record a node writes first when it becomes active (the failover
    work writes it; nothing does yet). The writer puts the new epoch in this record's header as
    well as its payload, so it is the first record of its epoch, and gives every later record the
    same; replay sets the state's epoch from it. An epoch that does not grow is refused, so no
    record of an older epoch follows a newer one (rule 3). Tested in tests/store/test_store_ops.py."""
    new = a["epoch"]
    if isinstance(new, bool) or not isinstance(new, int):
        raise StoreError("epoch must be an integer")
    if new <= alloc.epoch:
        raise StoreError(f"epoch {new} is not newer than the current epoch {alloc.epoch}")
    return {"epoch": new}, {"epoch": new}


# Operations whose records the writer may apply together, after deciding the ones that follow.
DEFERRED = frozenset({"deliver", "append"})

DECIDERS: dict[str, tuple[RecordType, Callable[..., Decision]]] = {
    "account_add": (RecordType.ACCOUNT_ADD, account_add),
    "account_del": (RecordType.ACCOUNT_DEL, account_del),
    "account_passwd": (RecordType.ACCOUNT_PASSWD, account_passwd),
    "quota_set": (RecordType.QUOTA_SET, quota_set),
    "mailbox_create": (RecordType.MAILBOX_CREATE, mailbox_create),
    "mailbox_rename": (RecordType.MAILBOX_RENAME, mailbox_rename),
    "mailbox_delete": (RecordType.MAILBOX_DELETE, mailbox_delete),
    "subscribe": (RecordType.SUBSCRIBE, subscribe),
    "deliver": (RecordType.DELIVER, deliver),
    "append": (RecordType.APPEND, append),
    "store_flags": (RecordType.FLAGS, store_flags),
    "copy": (RecordType.COPY, copy),
    "move": (RecordType.MOVE, move),
    "expunge": (RecordType.EXPUNGE, expunge),
    "epoch": (RecordType.EPOCH, epoch),
}
