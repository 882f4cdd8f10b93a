"""Truncation never deletes a segment that a pin (checkpoint, copy, backup) still needs."""

from __future__ import annotations

from mailpair.store.digest import digest_node
from tests.helpers.store import FAST_HASH, deliver, open_store


def test_truncation_honours_every_pin(tmp_path):
    store = open_store(tmp_path, segment_size=64 * 1024, checkpoint_every=10**9)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    for i in range(60):
        deliver(db, "alice", i, size=4000)
    segs = len(db.log.segments())
    assert segs >= 4
    assert db.truncate() == []  # no checkpoint yet: nothing may go
    db.set_pin("copy:node2", 10)  # a passive copy still needs LSN 10 onwards
    db.checkpoint()
    first = db.log.segments()[0]
    assert first.first_lsn <= 10, "a segment the copy needs was deleted"
    assert len(db.log.segments()) < segs or first.first_lsn == 1
    assert [r.lsn for r in db.log.read_from(10, 12)] == [10, 11, 12]
    db.set_pin("copy:node2", None)
    db.checkpoint()
    remaining = db.log.segments()
    assert len(remaining) == 1, "with only the checkpoint pin, all but the current segment can go"
    before = digest_node(tmp_path)
    store.close()
    # After truncation the database still opens (nothing before the checkpoint is replayed) and
    # takes new writes.
    store = open_store(tmp_path, segment_size=64 * 1024)
    assert digest_node(tmp_path) == before
    deliver(store.default_database(), "alice", 1000, size=4000)
    store.close()
