"""Continuous replication end to end with two real node processes on loopback."""

from __future__ import annotations

import json
import time


def test_pair_up_gives_a_healthy_copy(tmp_path, cli):
    info = cli.pair_up(tmp_path / "p", users=2)
    try:
        roles = {n["name"]: n["role"] for n in info["nodes"]}
        assert roles == {"node1": "active", "node2": "passive"}
        st = cli.status(tmp_path / "p")
        copies = {c["node"]: c for c in st["databases"][0]["copies"]}
        assert copies["node2"]["status"] == "Healthy"
        assert copies["node2"]["replayed_lsn"] == copies["node1"]["stored_lsn"]
        # a change made through the active's admin API reaches the copy
        active = cli.active(info)
        passive = next(n for n in info["nodes"] if n["role"] == "passive")
        code, body = cli.http(
            f"http://127.0.0.1:{active['admin']}/api/users", info["admin_token"], "POST", {"name": "carol", "password": "pw"}
        )
        assert code == 201, body
        want = copies["node1"]["stored_lsn"] + 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, body = cli.http(f"http://127.0.0.1:{passive['admin']}/api/users", info["admin_token"])
            if code == 200 and "carol" in {u["name"] for u in json.loads(body)["users"]}:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("carol never reached the passive copy")
        st = cli.status(tmp_path / "p")
        copies = {c["node"]: c for c in st["databases"][0]["copies"]}
        assert copies["node2"]["stored_lsn"] == want
        # a database created on the active while the pair runs gets its own copy (seeded)
        code, body = cli.http(
            f"http://127.0.0.1:{active['admin']}/api/databases", info["admin_token"], "POST", {"name": "archive"}
        )
        assert code == 201, body
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dbs = {d["name"]: d for d in cli.status(tmp_path / "p")["databases"]}
            copy = next((c for c in dbs.get("archive", {}).get("copies", []) if c["node"] == "node2"), None)
            if copy and copy["status"] == "Healthy":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no Healthy copy of the new database: {dbs}")
        # the pair comes back with its data: `pair up` again waits for Healthy copies of both
        t0 = time.monotonic()
        cli.pair_down(tmp_path / "p")
        assert time.monotonic() - t0 < 10  # both stopped on SIGTERM (pair down kills after 20 s)
        for name in ("node1", "node2"):
            assert "Traceback" not in (tmp_path / "p" / name / "node.log").read_text()  # a clean stop
        cli.pair_up(tmp_path / "p")
        st = cli.status(tmp_path / "p")
        assert {(d["name"], c["node"], c["status"]) for d in st["databases"] for c in d["copies"]} == {
            ("archive", "node1", "Mounted"),
            ("archive", "node2", "Healthy"),
            ("mail", "node1", "Mounted"),
            ("mail", "node2", "Healthy"),
        }
    finally:
        cli.pair_down(tmp_path / "p")


def test_deliveries_reach_an_identical_copy(pair):
    n = 10_000
    pair.start_active()
    pair.start_passive()
    out = pair.deliver(n, conc=32)
    pair.cmd(cmd="flags", n=200)
    last = pair.deliver(10)["lsn"]
    c = pair.wait_caught_up(last, timeout=120)
    assert c["copy_queue"] == 0 and c["replay_queue"] == 0
    assert out["errors"] == 0
    pair.stop()
    a, p = pair.digests()
    assert a["mail"]["applied_lsn"] == last
    assert a["mail"]["messages"] >= n
    assert a == p
