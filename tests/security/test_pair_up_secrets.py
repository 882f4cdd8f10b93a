"""`pair up` (issue 17): every sample account had the same salt and hash (they share a password,
so one cracked was all cracked, and equal hashes said so to anyone who read them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailpair.store.passwords import verify_password
from tests.helpers.pair import pair_down, pair_up


def _hashes(data: Path) -> dict[str, str]:
    state = next(data.rglob("state.sqlite"))
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT name, password_hash FROM accounts"))


def test_sample_accounts_get_their_own_salt(tmp_path):
    root = tmp_path / "pair"
    info = pair_up(root, users=3)
    try:
        data = {n["name"]: Path(n["data"]) for n in info["nodes"]}
        hashes = _hashes(data["node1"])
        assert sorted(hashes) == ["user1", "user2", "user3"]
        salts = {h.split("$")[3] for h in hashes.values()}
        assert len(salts) == 3 and len(set(hashes.values())) == 3, hashes
        for user in info["users"]:
            assert verify_password(user["password"], hashes[user["name"]])
    finally:
        pair_down(root)
