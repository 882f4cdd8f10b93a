"""Synchronous mode and its fallback, a lagged copy, suspend/resume and reseed (CLI), on two real
node processes."""

from __future__ import annotations

import json
import time


def test_sync_mode_answers_after_the_passive_stored_and_falls_back_when_it_is_gone(make_pair):
    pair = make_pair(mode="sync")
    pair.tune("node1", sync_fallback_s=1.0)
    try:
        pair.start_active()
        pair.start_passive()
        pair.wait(lambda: pair.copy()["status"] == "Healthy", 30, "Healthy")
        out = pair.deliver(500, conc=32)
        # every answer came after the passive had stored the record: the copy already holds it
        assert pair.copy()["stored_lsn"] >= out["lsn"]
        for _ in range(5):
            lsn = pair.deliver(1)["lsn"]
            assert pair.copy()["stored_lsn"] >= lsn
        assert pair.shipper()[0]["sync_fallback"] is False

        pair.kill_passive()
        t0 = time.monotonic()
        out = pair.deliver(50, conc=8)  # the active keeps serving without its partner
        assert out["errors"] == 0 and time.monotonic() - t0 < 20
        assert pair.shipper()[0]["sync_fallback"] is True
        assert "FELL BACK TO ASYNCHRONOUS" in pair.log_text("node1")

        pair.start_passive()
        pair.wait_caught_up(out["lsn"], 60)
        lsn = pair.deliver(5)["lsn"]
        pair.wait(lambda: pair.shipper()[0]["sync_fallback"] is False, 30, "synchronous again")
        lsn = pair.deliver(1)["lsn"]
        assert pair.copy()["stored_lsn"] >= lsn
        assert "synchronous again" in pair.log_text("node1")
        pair.wait_caught_up(lsn)  # stored is durable; replayed too before the digests are compared
    finally:
        pair.stop()
    a, p = pair.digests()
    assert a == p


def test_lagged_copy_stores_at_once_and_replays_after_the_delay(pair):
    pair.tune("node2", replay_delay_s=3.0)
    try:
        pair.start_active()
        pair.start_passive()
        pair.wait(lambda: pair.copy()["status"] == "Healthy", 30, "Healthy")
        before = pair.copy()["replayed_lsn"]
        lsn = pair.deliver(20)["lsn"]
        c = pair.wait(lambda: pair.copy() if pair.copy()["stored_lsn"] == lsn else None, 10, "stored")
        assert c["replayed_lsn"] == before and c["replay_queue"] == 20 and c["replay_queue_bytes"] > 0
        assert c["status"] == "Healthy"
        pair.wait_caught_up(lsn, 15)
    finally:
        pair.stop()


def test_suspend_resume_and_reseed_while_writing(pair, cli):
    root = str(pair.root)
    try:
        pair.start_active()
        pair.start_passive()
        pair.wait(lambda: pair.copy()["status"] == "Healthy", 30, "Healthy")

        cli.mailpair("copy", "suspend", "mail", "--dir", root)
        c = pair.wait(lambda: pair.copy() if pair.copy()["status"] == "Suspended" else None, 10, "Suspended")
        stored = c["stored_lsn"]
        lsn = pair.deliver(100)["lsn"]
        time.sleep(1)
        st = json.loads(cli.mailpair("copy", "status", "--dir", root, "--json").stdout)
        copy = next(c for c in st[0]["copies"] if c["node"] == "node2")
        assert copy["status"] == "Suspended" and copy["stored_lsn"] == stored and copy["reason"]

        cli.mailpair("copy", "resume", "mail", "--dir", root)
        pair.wait_caught_up(lsn)
        # it caught up from the segment files, then took new records as they were written
        pair.deliver(5)
        pair.wait(lambda: pair.copy()["mode"] == "block", 10, "block mode")
        log = pair.log_text("node2")
        assert log.rindex("file mode at LSN") < log.rindex("block mode at LSN")

        # reseed while deliveries go on: the copy is rebuilt from a snapshot plus the log after it
        pair.deliver_start(3000, conc=16)
        time.sleep(0.5)
        cli.mailpair("copy", "reseed", "mail", "--dir", root)
        pair.deliver_result()
        lsn = pair.deliver(10)["lsn"]
        pair.wait_caught_up(lsn, 120)
        assert pair.log_text("node2").count("seeded from a snapshot") == 2
    finally:
        pair.stop()
    a, p = pair.digests()
    assert a == p
