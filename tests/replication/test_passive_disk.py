"""A bit flipped in a segment on the passive's own disk: the passive still starts, the copy shows
Failed naming the LSN, and a reseed replaces it with a complete, identical copy."""

from __future__ import annotations


def test_damaged_copy_on_the_passive_fails_and_a_reseed_repairs_it(pair, flip_record):
    try:
        pair.start_active()
        pair.start_passive()
        first = pair.copy()["stored_lsn"]
        last = pair.deliver(300)["lsn"]
        pair.wait_caught_up(last)
        pair.passive.terminate()
        pair.passive.wait(20)
        bad = flip_record(pair.data("node2") / "databases" / "mail" / "log", range(first + 50, last - 50))
        pair.start_passive()
        c = pair.wait(lambda: pair.copy() if pair.copy()["status"] == "Failed" else None, 20, "Failed copy")
        assert f"LSN {bad}" in c["reason"] and "reseed" in c["reason"]
        pair.deliver(50)
        pair.copy_action("reseed")
        last = pair.deliver(10)["lsn"]
        pair.wait_caught_up(last, 60)
    finally:
        pair.stop()
    a, p = pair.digests()
    assert a == p
