"""`mailpair pair up` gives a node that takes mail: LMTP and SMTP ports in its JSON, deliveries
with swaks land in the active node's store, `pair down` stops it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.pair import active, pair_down, pair_up

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


def test_pair_up_takes_mail(tmp_path):
    root = tmp_path / "pair"
    info = pair_up(root, users=2)
    try:
        node = active(info)
        assert node["lmtp"] and node["smtp"]
        r = subprocess.run(["swaks", "--server", node["host"], "--port", str(node["lmtp"]), "--protocol", "LMTP",
                            "--from", "s@example.org", "--to", f"user1@{info['domain']},user2+Archive@{info['domain']}",
                            "--header", "Subject: pair-up"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("250 2.0.0 <user") == 2, r.stdout
        r = subprocess.run(["swaks", "--server", node["host"], "--port", str(node["smtp"]), "--from", "s@example.org",
                            "--to", f"user1@{info['domain']}", "--tls"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        pair_down(root)
    from mailpair.store import NodeStore

    store = NodeStore(Path(node["data"])).open(create_default=False)
    try:
        rows = store.default_database().read_sync(
            lambda c: c.execute(
                "SELECT x.account, x.name, b.raw FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id "
                "JOIN blobs b ON b.id = m.blob_id"
            ).fetchall()
        )
    finally:
        store.close()
    ours = sorted((account, box) for account, box, raw in rows if b"Subject: pair-up" in bytes(raw))
    # Archive has a special use (\Archive): a +detail may not file mail there (issue 17), so INBOX
    assert ours == [("user1", "INBOX"), ("user2", "INBOX")]
