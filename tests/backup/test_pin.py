"""Rule 4 with backups: while backups are taken, a segment is deleted only when a backup holds
it (and every other pin lets it go); status shows the last backup's age."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from mailpair.admin.statustable import status_rows
from mailpair.backup.pin import pin_backed_up
from mailpair.store.database import BACKUP_PIN_FILE
from tests.helpers import pair as pairutil
from tests.helpers.store import FAST_HASH, deliver, open_store


def _manifest(db, last_lsn: int) -> dict:
    return {
        "db_id": str(uuid.UUID(bytes=db.db_id)),
        "last_lsn": last_lsn,
        "id": f"b{last_lsn}",
        "kind": "full",
        "finished": "now",
    }


def test_truncation_keeps_what_no_backup_holds(tmp_path):
    store = open_store(tmp_path, segment_size=128 * 1024, checkpoint_every=10**9)
    db = store.default_database()
    db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    for i in range(60):
        deliver(db, "alice", i, size=70_000 if i == 7 else 6000)
    assert len(db.log.segments()) >= 4
    assert pin_backed_up([tmp_path], "mail", _manifest(db, 10)) == [db.path]
    db.checkpoint()
    assert db.log.first_lsn <= 11, "a segment no backup holds was deleted"
    assert [r.lsn for r in db.log.read_from(11, 12)] == [11, 12]
    assert "backup" not in json.loads((db.path / "pins.json").read_text()), "the backup pin lives in its own file"
    # a later backup lets the log go; the pin never moves back
    pin_backed_up([tmp_path], "mail", _manifest(db, db.applied_lsn))
    pin_backed_up([tmp_path], "mail", _manifest(db, 5))
    assert json.loads((db.path / BACKUP_PIN_FILE).read_text())["lsn"] == db.applied_lsn + 1
    db.checkpoint()
    assert len(db.log.segments()) == 1
    # another database's backup does not pin this one
    other = _manifest(db, 1) | {"db_id": "00000000-0000-0000-0000-000000000009"}
    assert pin_backed_up([tmp_path], "mail", other) == []
    store.close()


def test_a_backup_pins_both_nodes_and_status_shows_its_age(mail_pair, tmp_path):
    p = mail_pair
    p.caught_up()
    full = p.backup("full", tmp_path / "t")
    for node in p.info["nodes"]:
        pin = json.loads((Path(node["data"]) / "databases" / "mail" / BACKUP_PIN_FILE).read_text())
        assert pin["lsn"] == full["last_lsn"] + 1 and pin["id"] == full["id"]
    st = pairutil.status(p.root)
    backup = st["databases"][0]["last_backup"]
    assert backup["id"] == full["id"] and time.time() - backup["finished_ts"] < 60
    assert all(r["backup"].endswith("s") for r in status_rows(st) if r.get("database") == "mail")
    # backups stopped for good: unpin lets the logs go again
    out = p.cli("backup", "unpin", "--dir", str(p.root)).stdout
    for node in p.info["nodes"]:
        path = Path(node["data"]) / "databases" / "mail" / BACKUP_PIN_FILE
        assert str(path) in out and not path.exists()
