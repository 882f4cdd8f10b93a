"""A really full disk (a small tmpfs): writes are refused with a clear error, the database stays
readable and consistent, and writes resume when space returns."""

from __future__ import annotations

import os
import subprocess

import pytest
from util import FAST_HASH, deliver, open_store

from mailpair.store import StoreUnavailable
from mailpair.store.verify import verify_database


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_refuses_then_resumes(small_disk):
    data = small_disk / "node"
    store = open_store(data, segment_size=256 * 1024)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    # Fill most of the disk with a file we can delete later, as an admin would free space.
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (4 * 1024 * 1024))
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
    rep = verify_database(data / "databases" / "mail")
    assert rep.ok, rep.problems
    store = open_store(data, segment_size=256 * 1024)
    final = store.default_database().read_sync(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
    store.close()
    assert final == count
