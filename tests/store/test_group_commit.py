"""One group commit as users see it: deliveries decided together get the UIDs and quota they would
get one by one, and a record that cannot be applied fails alone while the rest of its batch lands."""

from __future__ import annotations

import threading
import time

import pytest

from mailpair.store import OverQuota, StoreError, prepare_message
from mailpair.store import database as database_module
from mailpair.store.digest import digest_node
from tests.helpers.store import FAST_HASH, message, open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path)
    db = s.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    db.commit("account_add", name="bob", hash=FAST_HASH, quota=0)
    yield s
    s.close()


def one_group_commit(db, requests: list[tuple[str, dict]], redone: int = 0) -> list:
    """Submit every request while the writer is held, so they all go in one batch; the results
    (or StoreErrors) in order. `redone`: how often the batch is expected to be done again one
    operation at a time (0: the fast path must get everything right by itself)."""
    before, redone_before = db.stats["batches"], db.stats["redone"]
    gate = threading.Event()
    holder = threading.Thread(target=db.call_on_writer, args=(gate.wait,))
    holder.start()
    futures = [db.submit(kind, args) for kind, args in requests]
    gate.set()
    holder.join()
    out = []
    for f in futures:
        try:
            out.append(f.result(timeout=30))
        except StoreError as e:
            out.append(e)
    assert db.stats["batches"] - before == 1
    assert db.stats["redone"] - redone_before == redone
    return out


def delivery(user: str, n: int, size: int = 2000, folder=None) -> tuple[str, dict]:
    return "deliver", dict(recipients=[(user, folder)], date=time.time_ns() // 1000, **prepare_message(message(n, size)))


def inbox(db, user: str) -> tuple[list[int], int, int]:
    def read(c):
        box_id, uidnext = c.execute("SELECT id, uidnext FROM mailboxes WHERE account=? AND name='INBOX'", (user,)).fetchone()
        uids = [r[0] for r in c.execute("SELECT uid FROM messages WHERE mailbox_id=? ORDER BY uid", (box_id,))]
        used = c.execute("SELECT used_bytes FROM accounts WHERE name=?", (user,)).fetchone()[0]
        return uids, uidnext, used

    return db.read_sync(read)


def test_deliveries_in_one_group_commit_get_consecutive_uids(store):
    db = store.default_database()
    results = one_group_commit(db, [delivery("alice" if i % 3 else "bob", i) for i in range(30)])
    alice_uids = [r["results"][0][2] for i, r in enumerate(results) if i % 3]
    assert alice_uids == list(range(1, 21))
    uids, uidnext, used = inbox(db, "alice")
    assert uids == list(range(1, 21)) and uidnext == 21 and used == 20 * 2000
    assert inbox(db, "bob")[:2] == (list(range(1, 11)), 11)


def test_quota_counts_the_deliveries_before_in_the_same_group_commit(store):
    db = store.default_database()
    db.commit("quota_set", name="alice", quota=3 * 2000)
    results = one_group_commit(db, [delivery("alice", i) for i in range(5)])
    outcomes = [r["results"][0][0] for r in results]
    assert outcomes == ["ok", "ok", "ok", "error", "error"]
    assert isinstance(results[3]["results"][0][1], OverQuota)
    assert inbox(db, "alice") == ([1, 2, 3], 4, 3 * 2000)


def test_flags_and_expunge_between_deliveries_see_them(store):
    db = store.default_database()
    requests = [delivery("alice", 1), delivery("alice", 2)]
    requests.append(("store_flags", dict(account="alice", mailbox="INBOX", uids=[1, 2], mode="add", flags=["\\Deleted"])))
    requests.append(delivery("alice", 3))
    requests.append(("expunge", dict(account="alice", mailbox="INBOX")))
    requests.append(delivery("alice", 4))
    results = one_group_commit(db, requests)
    assert results[2]["changed"] == [1, 2]
    assert results[4]["uids"] == [1, 2]
    assert [r["results"][0][2] for i, r in enumerate(results) if i in (0, 1, 3, 5)] == [1, 2, 3, 4]
    assert inbox(db, "alice")[:2] == ([3, 4], 5)


def test_a_record_that_cannot_be_applied_fails_alone(store, monkeypatch, tmp_path):
    """A record whose apply fails (here: a fault injected for one message) spoils the batch's
    transaction; the writer does the batch again one operation at a time, so only that one fails,
    nothing of it reaches the log, and the log replays to the same state."""
    db = store.default_database()
    real = database_module.apply_records

    def faulty(conn, items):
        if any(b"POISON" in p.get("raw", b"") for _, p, _, _ in items):
            raise database_module.ReplayError("injected fault")
        return real(conn, items)

    monkeypatch.setattr(database_module, "apply_records", faulty)
    poison = ("deliver", dict(recipients=[("alice", None)], date=1, **prepare_message(message(99, 500) + b"POISON\r\n")))
    results = one_group_commit(db, [delivery("alice", 1), delivery("bob", 2), poison, delivery("alice", 3)], redone=1)
    assert isinstance(results[2], StoreError) and "injected fault" in str(results[2])
    assert [r["results"][0][2] for i, r in enumerate(results) if i != 2] == [1, 1, 2]
    assert inbox(db, "alice")[0] == [1, 2]
    last = db.log.last_lsn
    assert [r.type for r in db.log.read_from(last - 2)] == [20, 20, 20]  # three deliveries, no fourth
    monkeypatch.setattr(database_module, "apply_records", real)
    before = digest_node(tmp_path)
    store.close()
    state = next(tmp_path.rglob("state.sqlite"))
    for p in state.parent.glob("state.sqlite*"):
        p.unlink()  # the log alone must rebuild the same state
    reopened = open_store(tmp_path)
    reopened.close()
    assert digest_node(tmp_path) == before


def test_requests_arriving_while_a_batch_is_decided_join_it(store, monkeypatch):
    db = store.default_database()
    real_type, real = database_module.decide.DECIDERS["deliver"]
    late: list = []

    def deliver_and_more_arrive(conn, alloc, args):
        if not late:  # while the first delivery is being decided, two more come in
            late.extend(db.submit(*delivery("alice", 100 + k)) for k in range(2))
        return real(conn, alloc, args)

    monkeypatch.setitem(database_module.decide.DECIDERS, "deliver", (real_type, deliver_and_more_arrive))
    before = db.stats["batches"]
    first = db.commit(*delivery("alice", 1)[:1], **delivery("alice", 1)[1])
    assert [first["results"][0][2]] + [f.result(timeout=30)["results"][0][2] for f in late] == [1, 2, 3]
    assert db.stats["batches"] - before == 1  # one fsync for all three


def test_nothing_joins_a_batch_past_a_call_queued_behind_it(store, monkeypatch):
    """An operation queued after a call between batches (a role change, say) must come after it."""
    db = store.default_database()
    real_type, real = database_module.decide.DECIDERS["deliver"]
    seen: dict = {}
    later: list = []

    def deliver_then_call_then_more(conn, alloc, args):
        if not later:
            call = database_module._CallRequest(lambda: seen.setdefault("applied_at_call", db.applied_lsn))
            db._queue.put(call)
            later.append(db.submit(*delivery("alice", 2)))
        return real(conn, alloc, args)

    monkeypatch.setitem(database_module.decide.DECIDERS, "deliver", (real_type, deliver_then_call_then_more))
    first = db.commit(*delivery("alice", 1)[:1], **delivery("alice", 1)[1])
    second = later[0].result(timeout=30)
    assert seen["applied_at_call"] == first["lsn"]  # the call ran after the first batch, before the second
    assert second["lsn"] > first["lsn"]


def test_a_group_commit_takes_at_most_max_batch(store, monkeypatch):
    db = store.default_database()
    monkeypatch.setattr(database_module, "MAX_BATCH", 5)
    before = db.stats["batches"]
    gate = threading.Event()
    holder = threading.Thread(target=db.call_on_writer, args=(gate.wait,))
    holder.start()
    futures = [db.submit(*delivery("alice", i)) for i in range(12)]
    gate.set()
    holder.join()
    assert [f.result(timeout=30)["results"][0][2] for f in futures] == list(range(1, 13))
    assert db.stats["batches"] - before == 3
