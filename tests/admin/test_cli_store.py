"""The store's command line as an admin uses it on a stopped node: users, databases, verify."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.pair import pair_down, pair_up


def mp(*args, input=None):
    return subprocess.run([sys.executable, "-m", "mailpair", *args], capture_output=True, text=True, input=input, timeout=60)


def test_user_lifecycle_on_a_data_directory(tmp_path):
    data = str(tmp_path / "node")
    r = mp("user", "add", "alice", "--password-stdin", "--quota", "1000000", "--data", data, input="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert mp("user", "add", "bob", "--password-stdin", "--data", data, input="pw\n").returncode == 0
    r = mp("user", "add", "alice", "--password-stdin", "--data", data, input="again\n")
    assert r.returncode != 0 and "exists" in r.stderr
    r = mp("user", "add", "../evil", "--password-stdin", "--data", data, input="x\n")
    assert r.returncode != 0 and "invalid user name" in r.stderr
    r = mp("user", "add", "carol", "--password-stdin", "--data", data, input="\n")
    assert r.returncode != 0 and "empty" in r.stderr
    users = json.loads(mp("user", "list", "--json", "--data", data).stdout)
    assert [(u["name"], u["quota"]) for u in users] == [("alice", 1000000), ("bob", 0)]
    assert mp("user", "passwd", "alice", "--password-stdin", "--data", data, input="new\n").returncode == 0
    assert mp("user", "del", "bob", "--yes", "--data", data).returncode == 0
    r = mp("user", "del", "nobody", "--yes", "--data", data)
    assert r.returncode != 0 and "no such account" in r.stderr
    users = json.loads(mp("user", "list", "--json", "--data", data).stdout)
    assert [u["name"] for u in users] == ["alice"]
    from mailpair.store import NodeStore, verify_password

    store = NodeStore(tmp_path / "node").open()
    try:
        h = store.default_database().read_sync(lambda c: c.execute("SELECT password_hash FROM accounts").fetchone()[0])
    finally:
        store.close()
    assert verify_password("new", h) and not verify_password("s3cret", h)


def test_db_create_list_digest_verify(tmp_path):
    data = str(tmp_path / "node")
    assert mp("db", "create", "archive", "--data", data).returncode == 0
    r = mp("db", "create", "Bad Name", "--data", data)
    assert r.returncode != 0 and "invalid database name" in r.stderr
    names = [d["name"] for d in json.loads(mp("db", "list", "--json", "--data", data).stdout)]
    assert names == ["archive", "mail"]  # a new node gets its default database "mail"
    digest = json.loads(mp("db", "digest", data).stdout)
    assert [d["name"] for d in digest["databases"]] == ["archive", "mail"]
    assert set(digest["databases"][0]) >= {"name", "applied_lsn", "digest"}
    r = mp("verify", data)
    assert r.returncode == 0 and "sound" in r.stdout
    r = mp("verify", str(tmp_path))
    assert r.returncode == 2 and "neither" in r.stderr


def test_cli_refuses_a_data_directory_a_node_holds(tmp_path):
    from mailpair.datadir import lock_data_dir

    fd = lock_data_dir(tmp_path / "node")
    try:
        r = mp("user", "list", "--data", str(tmp_path / "node"))
        assert r.returncode != 0 and "in use by a running node" in r.stderr
    finally:
        import os

        os.close(fd)


def test_a_third_node_is_refused(tmp_path):
    import json as _json

    (tmp_path / "pair.json").write_text(
        _json.dumps({"dir": str(tmp_path), "witness": str(tmp_path / "w"), "node_names": ["node1", "node2", "node3"]})
    )
    r = mp("pair", "up", "--dir", str(tmp_path))
    assert r.returncode != 0
    assert "exactly two nodes" in r.stderr and "node3" in r.stderr
    r = mp("status", "--dir", str(tmp_path), "--json")
    assert r.returncode != 0 and "exactly two nodes" in r.stderr


def test_damaged_state_file_stops_the_node_with_the_fix_and_rebuild_brings_it_back(tmp_path):
    import imaplib

    root = tmp_path / "pair"
    info = pair_up(root, users=1)
    pair_down(root)
    node1 = next(n for n in info["nodes"] if n["name"] == "node1")
    state = tmp_path / "pair" / "node1" / "databases" / "mail" / "state.sqlite"
    with open(state, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 4000)
    r = mp("pair", "up", "--dir", str(root))
    try:
        assert r.returncode != 0
        assert "node1 cannot start" in r.stderr and "is damaged" in r.stderr and "mailpair db rebuild mail" in r.stderr
        assert "Traceback" not in (root / "node1" / "node.log").read_text()
    finally:
        pair_down(root)
    r = mp("db", "rebuild", "mail", "--data", str(root / "node1"))
    assert r.returncode == 0, r.stderr
    info = pair_up(root)
    try:
        c = imaplib.IMAP4("127.0.0.1", node1["imap"])
        c.login("user1", info["users"][0]["password"])
        typ, data = c.select("INBOX")
        assert typ == "OK" and int(data[0]) == 3  # the sample mail, replayed from the log
        c.logout()
    finally:
        pair_down(root)
