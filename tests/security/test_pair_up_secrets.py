"""`pair up` (issue 17): every sample account had the same salt and hash (they share a password,
so one cracked was all cracked, and equal hashes said so to anyone who read them), and only one
previous node.log was kept, so the run before a crash was gone after two restarts."""

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


def test_logs_of_earlier_runs_are_kept(tmp_path):
    root = tmp_path / "pair"
    info = pair_up(root, users=1)
    try:
        data = {n["name"]: Path(n["data"]) for n in info["nodes"]}
        # Three restarts: the three runs before this one each keep their log.
        marks = []
        for run in range(3):
            log = data["node1"] / "node.log"
            marks.append(f"-- run {run} --")
            with log.open("a") as f:
                f.write(marks[-1] + "\n")
            pair_down(root)
            pair_up(root)
        for k, mark in zip((3, 2, 1), marks, strict=True):
            kept = data["node1"] / f"node.log.{k}"
            assert kept.exists() and mark in kept.read_text(), k
    finally:
        pair_down(root)


def test_kept_logs_are_bounded(tmp_path):
    from mailpair.admin.pair import KEPT_LOGS, rotate_logs

    log = tmp_path / "node.log"
    for run in range(KEPT_LOGS + 4):
        log.write_text(f"run {run}\n")
        rotate_logs(log, KEPT_LOGS)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [f"node.log.{k}" for k in range(1, KEPT_LOGS + 1)]
    assert (tmp_path / "node.log.1").read_text() == f"run {KEPT_LOGS + 3}\n"
    assert (tmp_path / f"node.log.{KEPT_LOGS}").read_text() == "run 4\n"  # the oldest kept
