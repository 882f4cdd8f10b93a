"""A really full disk (a small tmpfs): writes are refused with a clear error, the database stays
readable and consistent, and writes resume when space returns."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from mailpair.store import StoreUnavailable, prepare_message
from mailpair.store.verify import verify_database
from tests.helpers.store import FAST_HASH, deliver, message, open_store


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def nearly_full(small_disk, filler_mib: int):
    """A store on the small disk, most of which a file fills that the test deletes later, as an
    admin would free space: (data dir, store, database, filler)."""
    data = small_disk / "node"
    store = open_store(data, segment_size=256 * 1024)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (filler_mib * 1024 * 1024))
    return data, store, db, filler


def messages_after_reopen(data) -> int:
    rep = verify_database(data / "databases" / "mail")
    assert rep.ok, rep.problems
    store = open_store(data, segment_size=256 * 1024)
    count = store.default_database().read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
    store.close()
    return count


def test_full_disk_refuses_then_resumes(small_disk):
    data, store, db, filler = nearly_full(small_disk, 4)
    acked = 0
    error = None
    for i in range(2000):
        try:
            deliver(db, "alice", i, size=8000)
            acked += 1
        except StoreUnavailable as e:
            error = e
            break
    assert error is not None, "the disk never filled"
    assert "space" in str(error) or "disk" in str(error) or "full" in str(error), str(error)
    # Refused again while full, and reads still work and see exactly what was acknowledged.
    with pytest.raises(StoreUnavailable):
        deliver(db, "alice", 99999, size=8000)
    count = db.read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
    assert count == acked
    # Space returns: writes go on without a restart.
    os.unlink(filler)
    deliver(db, "alice", 100000, size=8000)
    count = db.read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
    assert count >= acked + 1
    store.close()
    assert messages_after_reopen(data) == count


def test_full_disk_during_a_group_commit_leaves_no_stray_records(small_disk):
    """A group commit that needs a new segment when there is no room for one is refused whole:
    nothing of it is left in the log to be taken for records later, and the log still replays
    to exactly what was acknowledged after space returns."""
    data, store, db, filler = nearly_full(small_disk, 5)
    acked = refused = 0
    for round_ in range(200):
        gate = threading.Event()
        holder = threading.Thread(target=db.call_on_writer, args=(gate.wait,))
        holder.start()
        futures = [
            db.submit("deliver", dict(recipients=[("alice", None)], date=1, **prepare_message(message(round_ * 10 + i, 8000))))
            for i in range(10)
        ]
        gate.set()
        holder.join()
        for fut in futures:
            try:
                fut.result()
                acked += 1
            except StoreUnavailable:
                refused += 1
        if refused:
            break
    assert refused == 10, "a whole group commit is refused when its segment cannot be made"
    os.unlink(filler)
    deliver(db, "alice", 10**6, size=8000)
    acked += 1
    store.close()
    assert messages_after_reopen(data) == acked
