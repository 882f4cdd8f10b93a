"""Torn tails, corrupt records, foreign segments, size limits: the log's answers to bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mailpair.store import StoreUnavailable
from mailpair.store.digest import digest_node
from mailpair.store.log import SEGMENT_HEADER_SIZE, LogCorruption, decode_record
from tests.helpers.store import FAST_HASH, deliver, open_store


def _mailbox(tmp_path, n=20, **config):
    store = open_store(tmp_path, **config)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    for i in range(n):
        deliver(db, "alice", i, size=1000)
    return store, db


def _segments(tmp_path):
    return sorted((tmp_path / "databases" / "mail" / "log").glob("*.log"))


def _record_offsets(path):
    buf = path.read_bytes()
    off, out = SEGMENT_HEADER_SIZE, []
    while (dec := decode_record(buf, off)) is not None:
        out.append((dec[0].lsn, off))
        off = dec[1]
    return out, off


def verify_cli(path):
    r = subprocess.run([sys.executable, "-m", "mailpair", "verify", str(path), "--json"], capture_output=True, text=True)
    return r.returncode, json.loads(r.stdout)


def test_torn_tail_is_cut_and_reported(tmp_path):
    store, db = _mailbox(tmp_path)
    before = digest_node(tmp_path)
    store.close()
    seg = _segments(tmp_path)[-1]
    offsets, end = _record_offsets(seg)
    # A record that was being written when the machine died: header and half its payload.
    last_lsn, last_off = offsets[-1]
    partial = seg.read_bytes()[last_off:end]
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(partial[: len(partial) // 2].replace(last_lsn.to_bytes(8, "little"), (last_lsn + 1).to_bytes(8, "little"), 1))
    torn = seg.read_bytes()
    code, reports = verify_cli(tmp_path)
    assert code == 0, reports
    assert any("torn tail" in n for n in reports[0]["notes"])
    assert seg.read_bytes() == torn  # verify reads; only the next open cuts
    store = open_store(tmp_path)
    try:
        assert digest_node(tmp_path) == before  # nothing acknowledged was lost, nothing torn was applied
        assert store.default_database().log.torn_tail_cut > 0
        deliver(store.default_database(), "alice", 999, size=1000)  # and the log goes on after the cut
        assert store.default_database().applied_lsn == before["databases"][0]["applied_lsn"] + 1
    finally:
        store.close()
    assert verify_cli(tmp_path)[0] == 0


def test_corrupt_record_in_the_middle_stops_recovery_with_segment_and_lsn(tmp_path):
    store, db = _mailbox(tmp_path)
    store.close()
    seg = _segments(tmp_path)[-1]
    offsets, _ = _record_offsets(seg)
    lsn, off = offsets[len(offsets) // 2]
    data = bytearray(seg.read_bytes())
    data[off + 60] ^= 0x40  # one bit flipped inside the record's payload
    seg.write_bytes(bytes(data))
    code, reports = verify_cli(tmp_path)
    assert code == 1
    assert reports[0]["first_bad_lsn"] == lsn
    assert seg.name in reports[0]["problems"][0]
    with pytest.raises(LogCorruption) as exc:
        open_store(tmp_path)
    assert exc.value.lsn == lsn and exc.value.segment == seg.name
    assert f"LSN {lsn}" in str(exc.value)


def test_state_is_rebuilt_from_the_log_when_lost(tmp_path):
    store, _ = _mailbox(tmp_path)
    before = digest_node(tmp_path)
    store.close()
    for f in (tmp_path / "databases" / "mail").glob("state.sqlite*"):
        f.unlink()
    store = open_store(tmp_path)
    store.close()
    assert digest_node(tmp_path) == before


def test_foreign_segment_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        s, _ = _mailbox(p, n=2)
        s.close()
    foreign = _segments(b)[0]
    target = _segments(a)[0]
    target.write_bytes(foreign.read_bytes())
    with pytest.raises(LogCorruption, match="belongs to database"):
        open_store(a)


def test_log_size_limit_refuses_writes_cleanly_and_resumes(tmp_path):
    store, db = _mailbox(tmp_path, n=0, segment_size=64 * 1024, max_log_bytes=3 * 64 * 1024)
    acked = 0
    with pytest.raises(StoreUnavailable, match="size limit"):
        for i in range(1000):
            deliver(db, "alice", i, size=4000)
            acked += 1
    count = db.read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
    assert count == acked  # the refused delivery left nothing behind
    # Room returns when a checkpoint lets old segments go.
    db.checkpoint()
    deliver(db, "alice", 5000, size=4000)
    store.close()
    store = open_store(tmp_path, segment_size=64 * 1024)
    assert store.default_database().read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0]) == acked + 1
    store.close()


def test_corrupt_state_file_is_reported(tmp_path):
    store, _ = _mailbox(tmp_path, n=30)
    store.default_database().checkpoint()
    store.close()
    state = tmp_path / "databases" / "mail" / "state.sqlite"
    data = bytearray(state.read_bytes())
    for off in range(2 * 4096 - 300, len(data), 4096):  # scribble over cell content of every page but the first
        data[off : off + 64] = b"\xa5" * 64
    state.write_bytes(bytes(data))
    code, reports = verify_cli(tmp_path)
    assert code == 1
    assert any("state file" in p for p in reports[0]["problems"])
    r = subprocess.run(
        [sys.executable, "-m", "mailpair", "db", "rebuild", "mail", "--data", str(tmp_path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert verify_cli(tmp_path)[0] == 0
    assert digest_node(tmp_path)["databases"][0]["applied_lsn"] == 31
    assert list((tmp_path / "databases" / "mail").glob("state.sqlite.damaged-*"))
