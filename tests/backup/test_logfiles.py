"""The log part of a backup, on a real database with small segments: any LSN range copies as
segment files that the log's own scanner reads back, record for record."""

from __future__ import annotations

import pytest

from mailpair.backup.logfiles import LogGap, RangeSummary, copy_range, read_records
from mailpair.store.log import LogCorruption
from tests.helpers.store import FAST_HASH, deliver, open_store


@pytest.fixture
def db(tmp_path):
    store = open_store(tmp_path / "node", segment_size=256 * 1024, checkpoint_every=10**9)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    for i in range(60):
        deliver(db, "alice", i, size=70_000 if i % 5 == 0 else 9000)
    yield db
    store.close()


def _copied(db, first, out):
    summary = RangeSummary(first, first - 1)
    pieces = list(copy_range(db.path / "log", db.db_id, first, summary))
    out.mkdir()
    recs = []
    for p in pieces:
        (out / p.name).write_bytes(p.data)
        recs += [r for r in read_records(out / p.name, db.db_id) if r.lsn >= first]
    return summary, pieces, recs


@pytest.mark.parametrize("first", [1, 2, 17, 40, 61, 62])
def test_any_range_copies_whole(db, tmp_path, first):
    assert len(db.log.segments()) >= 3
    summary, pieces, recs = _copied(db, first, tmp_path / "out")
    want = list(db.log.read_from(first)) if first <= db.log.last_lsn else []
    assert recs == want
    assert summary.last_lsn == (want[-1].lsn if want else first - 1)
    if want:
        assert summary.epochs == [[1, first]]
        assert summary.first_time_us == want[0].timestamp_us


def test_a_truncated_start_is_a_gap(db):
    db.checkpoint()  # deletes every segment but the last
    assert db.log.first_lsn > 1
    with pytest.raises(LogGap):
        list(copy_range(db.path / "log", db.db_id, 1, RangeSummary(1, 0)))


def test_a_damaged_copy_is_named(db, tmp_path):
    _, pieces, _ = _copied(db, 1, tmp_path / "out")
    path = tmp_path / "out" / pieces[0].name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruption, match=pieces[0].name):
        list(read_records(path, db.db_id))
