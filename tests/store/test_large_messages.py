"""Messages of real mail sizes through the store: the exact boundaries up to the limit are stored
and read back whole, live, after a reopen (the recovery scan) and replayed into a fresh state; one
byte over the limit is refused, and a record no segment could hold is refused alone without
failing the deliveries committed beside it."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from mailpair import mailmix
from mailpair.config import NodeConfig
from mailpair.store import TooLarge, prepare_message
from mailpair.store.digest import digest_node
from mailpair.store.rebuild import rebuild_state
from tests.helpers.store import FAST_HASH, open_store

LIMIT = 3 * 1024 * 1024 + 17  # a smaller limit than the default keeps the test quick; the edges are the same
SEGMENT = 4 * 1024 * 1024


def _deliver(db, raw: bytes):
    return db.submit(
        "deliver", {"recipients": [("alice", None)], "date": time.time_ns() // 1000, **prepare_message(raw, LIMIT + 10)}
    )


def _stored(db) -> dict[bytes, bytes]:
    rows = db.read_sync(lambda c: c.execute("SELECT b.raw FROM messages m JOIN blobs b ON b.id = m.blob_id").fetchall())
    out = {}
    for (raw,) in rows:
        raw = bytes(raw)
        mid = next(line.split(b":", 1)[1].strip() for line in raw.split(b"\r\n") if line.lower().startswith(b"message-id:"))
        out[mid] = raw
    return out


def test_boundary_sizes_are_stored_whole_and_survive_reopen_and_rebuild(tmp_path):
    store = open_store(tmp_path, segment_size=SEGMENT)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    sizes = [s for s in mailmix.boundary_sizes(LIMIT) if s <= LIMIT] + mailmix.sizes(40, seed=5, max_bytes=LIMIT)
    sent = {}
    futures = []
    for i, size in enumerate(sizes):
        raw = mailmix.message(size, seed=i)
        sent[f"<mix-{i}-{size}@example.org>".encode()] = raw
        futures.append(_deliver(db, raw))  # queued together: group commits of large and small records
    for f in futures:
        assert f.result()["results"][0][0] == "ok"
    assert _stored(db) == sent
    before = digest_node(tmp_path)
    assert len(db.log.segments()) > 2  # the records crossed segment boundaries
    store.close()
    store = open_store(tmp_path, segment_size=SEGMENT)  # the open scan reads every record
    assert _stored(store.default_database()) == sent
    store.close()
    db_dir = next(p for p in (tmp_path / "databases").iterdir() if (p / "id").exists())
    rebuild_state(db_dir)  # the whole log replayed into a fresh state file
    assert digest_node(tmp_path) == before


def test_over_the_limit_or_past_a_segment_is_refused_alone(tmp_path):
    store = open_store(tmp_path, segment_size=SEGMENT)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    with pytest.raises(TooLarge, match="over the limit"):
        prepare_message(mailmix.message(LIMIT + 1, seed=1), LIMIT)  # where delivery and APPEND check it
    store.close()
    # a store whose segments cannot hold its own limit (only a hand-made config can say so)
    store = open_store(tmp_path / "small", segment_size=1024 * 1024)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    big, small = mailmix.message(2 * 1024 * 1024, seed=2), mailmix.message(5000, seed=3)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(lambda r=r: _deliver(db, r).result()) for r in (big, small, small)]
        outcomes = [f.exception() or f.result() for f in futs]
    assert isinstance(outcomes[0], TooLarge) and "segment" in str(outcomes[0])
    assert all(o["results"][0][0] == "ok" for o in outcomes[1:])
    store.close()


def test_a_node_config_whose_segment_cannot_hold_its_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="segment_size"):
        NodeConfig(name="n", data=str(tmp_path), max_message_bytes=25 * 1024 * 1024, segment_size=16 * 1024 * 1024)
    NodeConfig(name="n", data=str(tmp_path))  # the defaults fit


def test_a_segment_too_large_for_a_replication_frame_is_refused(tmp_path):
    with pytest.raises(ValueError, match="replication frame"):
        NodeConfig(name="n", data=str(tmp_path), segment_size=128 * 1024 * 1024)
