"""Property: any sequence of operations, applied live and then replayed from the log into an empty
database, gives the identical state (the digest compares everything a user can see). Live, the
operations go one by one, or all in one group commit (where the writer applies runs of
deliveries together); replay applies runs of up to 2000 records, or one record at a time."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpair.store import Database, DatabaseConfig, NodeStore, StoreError, prepare_message
from mailpair.store.digest import digest_node
from tests.helpers.store import FAST_HASH, message

USERS = ["alice", "bob"]
BOXES = ["INBOX", "Work", "Work/Old", "Trash", "inbox", "Lists"]
FLAGS = ["\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "$Important", "todo"]

uids = st.lists(st.integers(1, 12), max_size=5)
ops = st.one_of(
    st.tuples(st.just("deliver"), st.sampled_from(USERS), st.sampled_from(BOXES + [None]), st.integers(0, 10**6)),
    st.tuples(st.just("append"), st.sampled_from(USERS), st.sampled_from(BOXES), st.lists(st.sampled_from(FLAGS), max_size=3)),
    st.tuples(
        st.just("store_flags"),
        st.sampled_from(USERS),
        st.sampled_from(BOXES),
        uids,
        st.sampled_from(["set", "add", "remove"]),
        st.lists(st.sampled_from(FLAGS), max_size=3),
    ),
    st.tuples(st.just("copy"), st.sampled_from(USERS), st.sampled_from(BOXES), st.sampled_from(BOXES), uids),
    st.tuples(st.just("move"), st.sampled_from(USERS), st.sampled_from(BOXES), st.sampled_from(BOXES), uids),
    st.tuples(st.just("expunge"), st.sampled_from(USERS), st.sampled_from(BOXES)),
    st.tuples(st.just("mailbox_create"), st.sampled_from(USERS), st.sampled_from(BOXES)),
    st.tuples(st.just("mailbox_rename"), st.sampled_from(USERS), st.sampled_from(BOXES), st.sampled_from(BOXES)),
    st.tuples(st.just("mailbox_delete"), st.sampled_from(USERS), st.sampled_from(BOXES)),
    st.tuples(st.just("quota_set"), st.sampled_from(USERS), st.sampled_from([0, 3000, 10**6])),
    st.tuples(st.just("subscribe"), st.sampled_from(USERS), st.sampled_from(BOXES), st.booleans()),
    st.tuples(st.just("account_del"), st.sampled_from(USERS)),
    st.tuples(st.just("account_add"), st.sampled_from(USERS)),
)


def request(op) -> tuple[str, dict]:
    kind, user = op[0], op[1]
    now = time.time_ns() // 1000
    if kind == "deliver":
        return "deliver", dict(recipients=[(user, op[2]), ("bob", None)], date=now, **prepare_message(message(op[3], 600)))
    if kind == "append":
        return "append", dict(account=user, mailbox=op[2], flags=op[3], date=now - 5, **prepare_message(message(7, 300)))
    if kind == "store_flags":
        return "store_flags", dict(account=user, mailbox=op[2], uids=op[3], mode=op[4], flags=op[5])
    if kind in ("copy", "move"):
        return kind, dict(account=user, src=op[2], dst=op[3], uids=op[4])
    if kind == "expunge":
        return "expunge", dict(account=user, mailbox=op[2])
    if kind == "mailbox_create":
        return "mailbox_create", dict(account=user, name=op[2])
    if kind == "mailbox_rename":
        return "mailbox_rename", dict(account=user, old=op[2], new=op[3])
    if kind == "mailbox_delete":
        return "mailbox_delete", dict(account=user, name=op[2])
    if kind == "quota_set":
        return "quota_set", dict(name=user, quota=op[2])
    if kind == "subscribe":
        return "subscribe", dict(account=user, name=op[2], on=op[3])
    if kind == "account_del":
        return "account_del", dict(name=user)
    return "account_add", dict(name=user, hash=FAST_HASH, quota=0)


def run(db, op) -> None:
    kind, args = request(op)
    db.commit(kind, **args)


def replay_into(src_root: Path, dst_root: Path, batch: int) -> None:
    """A new database from the live one's log alone, replayed `batch` records per transaction."""
    src = src_root / "databases" / "mail"
    dst = dst_root / "databases" / "mail"
    dst.mkdir(parents=True)
    shutil.copy(src / "id", dst / "id")
    shutil.copytree(src / "log", dst / "log")
    db = Database(dst, DatabaseConfig(segment_size=64 * 1024, replay_batch=batch))
    db.open()  # crash recovery: replays the whole log
    db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_live_state_equals_replayed_state(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        live, replayed = Path(tmp) / "live", Path(tmp) / "replayed"
        store = NodeStore(live, DatabaseConfig(segment_size=64 * 1024)).open()
        db = store.default_database()
        for user in USERS:
            db.commit("account_add", name=user, hash=FAST_HASH, quota=0)
        for op in sequence:
            try:
                run(db, op)
            except StoreError:
                pass  # refused operations change nothing; the digest comparison checks that too
        store.close()
        src = live / "databases" / "mail"
        dst = replayed / "databases" / "mail"
        dst.mkdir(parents=True)
        shutil.copy(src / "id", dst / "id")
        shutil.copytree(src / "log", dst / "log")
        store = NodeStore(replayed, DatabaseConfig(segment_size=64 * 1024)).open()
        store.close()
        a, b = digest_node(live), digest_node(replayed)
        assert a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_one_group_commit_equals_replay_in_runs_and_one_by_one(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        live = Path(tmp) / "live"
        store = NodeStore(live, DatabaseConfig(segment_size=64 * 1024)).open()
        db = store.default_database()
        for user in USERS:
            db.commit("account_add", name=user, hash=FAST_HASH, quota=0)
        # Hold the writer while the whole sequence queues up, so it becomes one group commit.
        before = db.stats["batches"]
        gate = threading.Event()
        holder = threading.Thread(target=db.call_on_writer, args=(gate.wait,))
        holder.start()
        futures = [db.submit(*request(op)) for op in sequence]
        gate.set()
        holder.join()
        for f in futures:
            try:
                f.result()
            except StoreError:
                pass
        assert db.stats["batches"] - before == 1  # the whole sequence went in one group commit
        assert db.stats["redone"] == 0  # and the fast path got it right by itself
        store.close()
        replay_into(live, Path(tmp) / "runs", batch=2000)
        replay_into(live, Path(tmp) / "single", batch=1)
        a = digest_node(live)
        assert a == digest_node(Path(tmp) / "runs")
        assert a == digest_node(Path(tmp) / "single")
