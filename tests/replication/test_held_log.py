"""A passive that stays away must not fill the active's disk: past a limit of held log the
active lets go of the copy's pin (loudly), and the copy reseeds by itself when it returns."""

from __future__ import annotations

import json


def _segments(pair) -> int:
    return len(list((pair.data("node1") / "databases" / "mail" / "log").glob("*.log")))


def test_a_copy_away_too_long_stops_holding_the_actives_log_and_reseeds_when_it_returns(pair):
    pair.tune("node1", max_held_log_bytes=1024 * 1024, held_log_grace_s=3.0)
    try:
        pair.start_active()
        pair.start_passive()
        last = pair.deliver(50)["lsn"]
        pair.wait_caught_up(last)
        pair.kill_passive()
        pins_file = pair.data("node1") / "databases" / "mail" / "pins.json"
        pair.deliver(17_000, conc=32, size=2000)  # more than a 32 MiB segment of log
        pair.cmd(cmd="checkpoint")  # the state no longer needs the first segment; only the copy does
        pair.wait(lambda: "copy:node2" not in json.loads(pins_file.read_text()), 30, "the copy's pin released")
        assert "no longer keeps log for it" in pair.log_text("node1")
        assert _segments(pair) == 1  # the first segment went as soon as nothing needed it
        pair.start_passive()  # it asks for LSNs that are gone: it reseeds by itself
        last = pair.deliver(10)["lsn"]
        pair.wait_caught_up(last, 90)
        assert pair.log_text("node2").count("seeded from a snapshot") == 2  # pair up's, and this one
    finally:
        pair.stop()
    a, p = pair.digests()
    assert a == p
