"""One continuity rule (store.continuity.check_next) for every place that takes records in
order: the passive's inspection, its store step and replay give the same answer in the same words."""

from __future__ import annotations

import uuid

import pytest

from mailpair.replication.inspect import InspectionFailed, inspect_batch
from mailpair.store.apply import ReplayError
from mailpair.store.continuity import StaleEpoch, check_next
from mailpair.store.database import Database, DatabaseConfig
from mailpair.store.log import Record, encode_record


def test_the_next_record_must_follow_without_gap_or_repeat_and_never_go_back_in_epoch():
    check_next(5, 2, 5, 2)
    check_next(5, 3, 5, 2)  # a newer epoch may begin
    with pytest.raises(ReplayError, match="LSN 7 where LSN 5 belongs") as e:
        check_next(7, 2, 5, 2)
    assert not isinstance(e.value, StaleEpoch)
    with pytest.raises(ReplayError, match="LSN 4 where LSN 5 belongs"):
        check_next(4, 2, 5, 2)
    with pytest.raises(StaleEpoch, match="LSN 5 is from epoch 1, older than epoch 2"):
        check_next(5, 1, 5, 2)


@pytest.mark.parametrize("gap", [True, False])
def test_inspection_and_replay_refuse_alike(tmp_path, gap):
    db = Database.create(tmp_path / "mail", DatabaseConfig(segment_size=64 * 1024))
    try:
        start = db.applied_lsn + 1
        if gap:
            lsn, epoch, words = start + 1, 1, f"record LSN {start + 1} where LSN {start} belongs"
        else:
            lsn, epoch, words = start, 0, f"record LSN {start} is from epoch 0, older than epoch 1"
        raw = encode_record(lsn, epoch, 1_700_000_000_000_000, 20, b"x")
        with pytest.raises(InspectionFailed, match=words):
            inspect_batch([raw], start, 1, db.db_id, db.db_id)
        with pytest.raises(ReplayError, match=words):
            db.call_on_writer(lambda: db.replay_records([Record(lsn, epoch, 1_700_000_000_000_000, 20, b"x")]))
        assert db.applied_lsn == start - 1  # nothing applied
    finally:
        db.close()


def test_a_batch_for_another_database_is_refused_before_its_records_are_looked_at():
    with pytest.raises(InspectionFailed, match="another database"):
        inspect_batch([b"garbage"], 1, 1, uuid.uuid4().bytes, uuid.uuid4().bytes)
