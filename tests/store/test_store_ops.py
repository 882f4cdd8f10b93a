"""Store operations as a user sees them, name validation, and group commit."""

from __future__ import annotations

import time

import pytest

from mailpair.store import (
    MailboxExists,
    NoSuchAccount,
    NoSuchMailbox,
    OverQuota,
    StoreError,
    TooLarge,
    hash_password,
    prepare_message,
    verify_password,
)
from mailpair.store.names import InvalidName, check_flag, check_mailbox, check_user
from tests.helpers.store import FAST_HASH, deliver, message, open_store


@pytest.fixture
def db(tmp_path):
    store = open_store(tmp_path)
    d = store.default_database()
    d.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    yield d
    store.close()


def boxes(db, user="alice"):
    return db.read_sync(lambda c: dict(c.execute("SELECT name, uidnext FROM mailboxes WHERE account=?", (user,)).fetchall()))


def test_new_account_has_special_use_folders(db):
    specials = db.read_sync(lambda c: dict(c.execute("SELECT name, special_use FROM mailboxes").fetchall()))
    assert specials == {
        "INBOX": None,
        "Drafts": "\\Drafts",
        "Sent": "\\Sent",
        "Trash": "\\Trash",
        "Junk": "\\Junk",
        "Archive": "\\Archive",
    }


def test_deliver_per_recipient_results_and_plus_folder(db):
    db.commit("mailbox_create", account="alice", name="lists")
    r = db.commit(
        "deliver", recipients=[("alice", "lists"), ("nobody", None), ("alice", "nosuch")], date=1, **prepare_message(message(1))
    )
    assert r["results"][0] == ("ok", "lists", 1)
    assert isinstance(r["results"][1][1], NoSuchAccount)
    assert r["results"][2] == ("ok", "INBOX", 1)
    assert boxes(db)["lists"] == 2 and boxes(db)["INBOX"] == 2


def test_quota_and_size_limit(db):
    db.commit("quota_set", name="alice", quota=10_000)
    deliver(db, "alice", 1, size=6000)
    r = deliver(db, "alice", 2, size=6000)
    assert isinstance(r["results"][0][1], OverQuota)
    with pytest.raises(TooLarge):
        prepare_message(b"x" * 2000, max_bytes=1000)


def test_flags_copy_move_expunge_and_modseq(db):
    for i in range(3):
        deliver(db, "alice", i)
    r = db.commit("store_flags", account="alice", mailbox="INBOX", uids=[1, 2], mode="add", flags=["\\Deleted", "todo"])
    assert r["changed"] == [1, 2]
    # CONDSTORE: a change made since the client's modseq is refused for that message.
    r2 = db.commit("store_flags", account="alice", mailbox="INBOX", uids=[1], mode="add", flags=["\\Seen"], unchanged_since=1)
    assert r2["modified"] == [1]
    c = db.commit("copy", account="alice", src="INBOX", dst="Archive", uids=[1, 3])
    assert c["pairs"] == [[1, 1], [3, 2]]
    m = db.commit("move", account="alice", src="INBOX", dst="Trash", uids=[3])
    assert m["pairs"] == [[3, 1]]
    e = db.commit("expunge", account="alice", mailbox="INBOX")
    assert e["uids"] == [1, 2]
    left = db.read_sync(
        lambda c: c.execute(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id=m.mailbox_id WHERE b.name='INBOX'"
        ).fetchone()[0]
    )
    assert left == 0
    expunged = db.read_sync(lambda c: [r[0] for r in c.execute("SELECT uid FROM expunged ORDER BY uid")])
    assert expunged == [1, 2, 3]
    with pytest.raises(NoSuchMailbox):
        db.commit("copy", account="alice", src="INBOX", dst="Nope", uids=[1])


def test_rename_moves_children_and_inbox_rename_empties_inbox(db):
    db.commit("mailbox_create", account="alice", name="Work/2025/Q1")
    assert {"Work", "Work/2025", "Work/2025/Q1"} <= set(boxes(db))
    db.commit("mailbox_rename", account="alice", old="Work", new="Job")
    assert {"Job", "Job/2025", "Job/2025/Q1"} <= set(boxes(db)) and "Work" not in boxes(db)
    with pytest.raises(MailboxExists):
        db.commit("mailbox_create", account="alice", name="job".replace("j", "J"))
    deliver(db, "alice", 1)
    db.commit("mailbox_rename", account="alice", old="inbox", new="Old")
    counts = db.read_sync(
        lambda c: dict(
            c.execute(
                "SELECT b.name, count(m.uid) FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id=b.id GROUP BY b.name"
            ).fetchall()
        )
    )
    assert counts["INBOX"] == 0 and counts["Old"] == 1
    with pytest.raises(StoreError):
        db.commit("mailbox_delete", account="alice", name="INBOX")


@pytest.mark.parametrize("bad", ["../etc", "a/../b", "", "x" * 65, "UPPER", "a b", "a/b", "-x"])
def test_bad_user_names_refused(bad):
    with pytest.raises(InvalidName):
        check_user(bad)


@pytest.mark.parametrize("bad", ["", "/lead", "trail/", "a//b", "a/../b", "a/./b", "bad*", "pct%", "ctl\x01", "x" * 600])
def test_bad_mailbox_names_refused(bad):
    with pytest.raises(InvalidName):
        check_mailbox(bad)


@pytest.mark.parametrize("bad", ["", "\\Bogus", "a b", "par(en", 'quo"te', "br]ace", "star*", "ünï"])
def test_bad_flags_refused(bad):
    with pytest.raises(InvalidName):
        check_flag(bad)


def test_refused_names_change_nothing(db):
    before = db.applied_lsn
    with pytest.raises(InvalidName):
        db.commit("mailbox_create", account="alice", name="../../etc")
    with pytest.raises(InvalidName):
        db.commit("store_flags", account="alice", mailbox="INBOX", uids=[1], mode="add", flags=["\\Bogus"])
    assert db.applied_lsn == before


def test_group_commit_shares_fsyncs(db):
    fsyncs = db.log.fsync_count
    prepared = prepare_message(message(1))
    # Submitted together, as 500 concurrent connections would.
    futs = [
        db.submit("deliver", {"recipients": [("alice", None)], "date": time.time_ns() // 1000, **prepared}) for _ in range(500)
    ]
    for f in futs:
        f.result()
    used = db.log.fsync_count - fsyncs
    assert used < 250, f"{used} fsyncs for 500 deliveries: group commit is not sharing them"
    assert boxes(db)["INBOX"] == 501


def test_password_hash_is_slow_enough_and_checks():
    t = time.perf_counter()
    h = hash_password("correct horse")
    elapsed = time.perf_counter() - t
    assert h.startswith("$scrypt$")
    assert verify_password("correct horse", h)
    assert not verify_password("wrong", h)
    assert not verify_password("x", "garbage")
    assert 0.005 < elapsed < 1.0


def test_an_operation_that_cannot_be_recorded_fails_alone_and_the_store_goes_on(tmp_path):
    """A value no record can hold (an int over 64 bits) fails that operation with a clear error;
    the writer's transaction is not left open, so later writes succeed."""
    from mailpair.store import Database, StoreError, hash_password

    db = Database.create(tmp_path / "db")
    try:
        db.commit("account_add", name="ann", hash=hash_password("pw"), quota=0)
        futures = [
            db.submit("quota_set", {"name": "ann", "quota": 2**70}),
            db.submit("quota_set", {"name": "ann", "quota": 5000}),
        ]
        with pytest.raises(StoreError, match="cannot be done"):
            futures[0].result()
        futures[1].result()
        db.commit("account_add", name="bob", hash=hash_password("pw"), quota=0)
        quotas = db.read_sync(lambda c: dict(c.execute("SELECT name, quota_bytes FROM accounts").fetchall()))
        assert quotas == {"ann": 5000, "bob": 0}
    finally:
        db.close()
    db = Database(tmp_path / "db")  # and the log replays to the same state
    db.open()
    try:
        assert db.read_sync(lambda c: dict(c.execute("SELECT name, quota_bytes FROM accounts").fetchall())) == {
            "ann": 5000,
            "bob": 0,
        }
    finally:
        db.close()


def test_epoch_record_begins_an_epoch_that_only_grows(tmp_path):
    store = open_store(tmp_path / "a")
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    assert db.epoch == 1
    res = db.commit("epoch", epoch=3)
    assert res["epoch"] == 3 and db.epoch == 3
    deliver(db, "alice", 1)
    records = list(db.log.read_from(1, db.log.last_lsn))
    assert [r.epoch for r in records] == [1, 3, 3]  # the EPOCH record is the first of its epoch
    for bad in (3, 2, "4", True):
        with pytest.raises(StoreError):
            db.commit("epoch", epoch=bad)
    assert db.epoch == 3 and db.log.last_lsn == 3  # refused: nothing written
    store.close()
    store = open_store(tmp_path / "a")
    try:
        assert store.default_database().epoch == 3
    finally:
        store.close()
