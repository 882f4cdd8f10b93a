"""A snapshot taken while the writer commits is one consistent version: replaying the log after
its applied LSN onto it gives exactly the live database."""

from __future__ import annotations

import os
import shutil
import threading
import uuid

from mailpair.store.digest import digest_node
from mailpair.store.snapshot import snapshot_beside, take_snapshot
from tests.helpers.store import FAST_HASH, deliver, open_store


def test_snapshot_during_writes_replays_to_the_live_state(tmp_path):
    live = tmp_path / "live"
    store = open_store(live, checkpoint_every=10**9)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    for i in range(50):
        deliver(db, "alice", i, size=3000)
    stop = threading.Event()

    def writer() -> None:
        i = 1000
        while not stop.is_set():
            deliver(db, "alice", i, size=70_000 if i % 7 == 0 else 2000)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        snaps = [take_snapshot(db.path, tmp_path / f"snap{k}.sqlite") for k in range(3)]
    finally:
        stop.set()
        t.join()
    assert snaps[0].applied_lsn > 50 and snaps[-1].applied_lsn >= snaps[0].applied_lsn
    assert snaps[0].db_id == db.db_id
    final = digest_node(live)
    store.close()
    for k, snap in enumerate(snaps):
        # a database made of the snapshot and the whole log replays from applied_lsn+1 on open
        other = tmp_path / f"other{k}" / "databases" / "mail"
        other.mkdir(parents=True)
        shutil.copy(snap.path, other / "state.sqlite")
        shutil.copytree(live / "databases" / "mail" / "log", other / "log")
        (other / "id").write_text(str(uuid.UUID(bytes=snap.db_id)) + "\n")
        s = open_store(other.parent.parent)
        s.close()
        assert digest_node(other.parent.parent) == final


def test_snapshot_beside_leaves_one_file(tmp_path):
    old = os.umask(0o022)
    try:
        _one_file(tmp_path)
    finally:
        os.umask(old)


def _one_file(tmp_path):
    store = open_store(tmp_path)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    snap = snapshot_beside(db.path)
    try:
        assert snap.path.parent == db.path and snap.path.name.startswith(".snapshot-")
        assert snap.applied_lsn == db.applied_lsn
        assert not snap.path.with_name(snap.path.name + "-wal").exists()
        assert snap.path.stat().st_mode & 0o077 == 0, "a snapshot holds mail: 0600 whatever the umask"
    finally:
        snap.path.unlink()
        store.close()
