"""Epoch histories and the divergence point a rejoining node keeps up to."""

from __future__ import annotations

import pytest

from mailpair.cluster.epochs import (
    EpochHistory,
    EpochHistoryError,
    EpochRecord,
    divergence_point,
    needs_rebuild,
    set_aside_range,
)

E1 = EpochRecord(1, 1, (0, 0), "node1")


def test_failover_the_old_active_sets_aside_what_the_new_one_never_got():
    a = EpochHistory([E1])  # node1 wrote 1..100 in epoch 1
    b = EpochHistory([E1, EpochRecord(2, 91, (1, 90), "node2", uid_gap=40)])  # node2 held 90, went on to 120
    point = divergence_point(a, 100, b, 120)
    assert point == (1, 90)
    assert set_aside_range(a, 100, point) == (91, 100)
    assert set_aside_range(b, 120, point) == (91, 120)  # the other side's view: all of it is new to node1
    assert needs_rebuild((1, 95), point) and not needs_rebuild((1, 90), point)
    # positions compare as pairs: LSN 95 of epoch 2 is after the point, LSN 95 of epoch 1 too,
    # but (2, 91) is after (1, 100) although its LSN is lower
    assert b.position(95) == (2, 95) and a.position(95) == (1, 95) and (2, 91) > (1, 100)


def test_nothing_diverged_when_the_old_active_had_nothing_more():
    a = EpochHistory([E1])
    b = EpochHistory([E1, EpochRecord(2, 91, (1, 90), "node2")])
    assert divergence_point(a, 90, b, 130) == (1, 90)
    assert set_aside_range(a, 90, (1, 90)) is None


def test_several_epochs_the_last_shared_one_decides():
    # histories that share only epoch 1: each side's end of it is where its next epoch began
    a = EpochHistory([E1, EpochRecord(3, 61, (1, 60), "node1")])
    b = EpochHistory([E1, EpochRecord(2, 56, (1, 55), "node2")])
    assert divergence_point(a, 80, b, 70) == (1, 55)
    assert set_aside_range(a, 80, (1, 55)) == (56, 80)
    # both hold e1 and e2: the end of e2 decides
    c = EpochHistory([E1, EpochRecord(2, 56, (1, 55), "node2")])
    d = EpochHistory([E1, EpochRecord(2, 56, (1, 55), "node2"), EpochRecord(4, 75, (2, 74), "node1")])
    assert divergence_point(c, 90, d, 100) == (2, 74)


def test_no_shared_epoch_means_reseed_and_disagreeing_histories_are_refused():
    assert divergence_point(EpochHistory([E1]), 10, EpochHistory([EpochRecord(2, 1, (0, 0), "node2")]), 10) == (0, 0)
    other_e1 = EpochRecord(1, 5, (0, 4), "node2")
    with pytest.raises(EpochHistoryError, match="disagree"):
        divergence_point(EpochHistory([E1]), 10, EpochHistory([other_e1]), 10)


def test_a_history_refuses_an_older_epoch_and_overlaps():
    h = EpochHistory([E1, EpochRecord(3, 50, (1, 49), "node2")])
    with pytest.raises(EpochHistoryError, match="older epoch is refused"):
        h.append(EpochRecord(2, 60, (1, 59), "node1"))
    with pytest.raises(EpochHistoryError, match="inside epoch"):
        h.append(EpochRecord(4, 40, (3, 39), "node1"))
    with pytest.raises(EpochHistoryError):
        EpochRecord(2, 10, (2, 9), "node1")  # cannot follow itself
    with pytest.raises(EpochHistoryError):
        EpochRecord(2, 10, (1, 10), "node1")  # previous end at its own start
    assert h.epoch_at(49) == 1 and h.epoch_at(50) == 3 and h.end_of(1, 80) == 49 and h.end_of(3, 80) == 80


def test_epoch_record_round_trips():
    r = EpochRecord(7, 1000, (6, 999), "node2", uid_gap=123, forced="up to 40 records may be lost")
    assert EpochRecord.from_json(r.to_json()) == r
