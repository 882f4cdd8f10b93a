"""SIGKILL a real writer process in the middle of a delivery load; every acknowledged delivery must
be present exactly once after reopening, and nothing unacknowledged half-applied."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mailpair.store import NodeStore
from mailpair.store.verify import verify_database

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(data: Path, start: int, acks_wanted: int) -> set[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.crash_writer", str(data), str(start), "16"],
        cwd=ROOT,  # where `tests` is a package to import
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: set[int] = set()
    try:
        assert proc.stdout.readline().strip() == "READY"
        while len(acked) < acks_wanted:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.add(int(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        # Lines already written before the kill are acknowledged deliveries too.
        rest = proc.communicate()[0]
    acked |= {int(m) for m in re.findall(r"^ACK (\d+)$", rest, re.M)}
    return acked


def check_state(data: Path) -> Counter:
    store = NodeStore(data).open()
    try:
        db = store.default_database()

        def read(conn):
            rows = conn.execute("SELECT m.uid, m.size, b.raw, b.refs FROM messages m JOIN blobs b ON b.id = m.blob_id").fetchall()
            box = conn.execute("SELECT uidnext FROM mailboxes WHERE account='alice' AND name='INBOX'").fetchone()
            used = conn.execute("SELECT used_bytes FROM accounts WHERE name='alice'").fetchone()[0]
            orphans = conn.execute("SELECT count(*) FROM blobs WHERE id NOT IN (SELECT blob_id FROM messages)").fetchone()
            return rows, box[0], used, orphans[0]

        rows, uidnext, used, orphans = db.read_sync(read)
        uids = [r[0] for r in rows]
        assert len(uids) == len(set(uids)), "duplicate UIDs"
        assert not uids or uidnext > max(uids)
        assert used == sum(r[1] for r in rows), "quota usage disagrees with the messages"
        assert orphans == 0
        assert all(r[3] == 1 and len(r[2]) == r[1] for r in rows), "half-applied message"
        ids = Counter(int(re.search(rb"Message-ID: <m(\d+)@test>", r[2]).group(1)) for r in rows)
        return ids
    finally:
        store.close()


def test_sigkill_during_deliveries_keeps_every_acknowledged_one(tmp_path):
    data = tmp_path / "node"
    all_acked: set[int] = set()
    for round_no, wanted in enumerate((150, 400, 250)):
        all_acked |= run_and_kill(data, round_no * 100_000, wanted)
        ids = check_state(data)
        missing = all_acked - set(ids)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:10]}"
        dupes = [n for n, c in ids.items() if c > 1]
        assert not dupes, f"delivered twice: {dupes[:10]}"
        rep = verify_database(data / "databases" / "mail")
        assert rep.ok, rep.problems
