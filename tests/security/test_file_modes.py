"""Mail and password hashes are not readable by other local users (issue 17: state.sqlite and its
-wal/-shm were 0644 in 0755 directories, and a local user read hashes and mail from them)."""

from __future__ import annotations

import json
import os
import smtplib
import stat
from pathlib import Path

from tests.helpers.pair import mailpair


def _readable_by_others(root: Path) -> list[str]:
    out = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            continue
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(f"{path.relative_to(root)} {stat.S_IMODE(st.st_mode):04o}")
    return out


def test_data_directories_are_private_and_verify_warns_about_loose_files(tmp_path):
    root = tmp_path / "pair"
    old = os.umask(0o022)  # the usual umask of the account that starts the pair
    try:
        info = json.loads(mailpair("pair", "up", "--dir", str(root), "--users", "1", "--json").stdout)
        node = next(n for n in info["nodes"] if n["role"] == "active")
        with smtplib.LMTP("127.0.0.1", node["lmtp"]) as lmtp:
            lmtp.sendmail("a@example.org", [f"user1@{info['domain']}"], b"Subject: private\r\n\r\nsecret body\r\n")
        for n in info["nodes"]:
            data = Path(n["data"])
            assert (data / "databases").exists()
            assert any(p.name == "state.sqlite-wal" for p in data.rglob("*"))  # the WAL exists, and is checked too
            assert _readable_by_others(data) == [], n["name"]
        mailpair("pair", "down", "--dir", str(root))
        data = Path(node["data"])
        state = next(data.rglob("state.sqlite"))
        os.chmod(state, 0o644)  # as an older version, or a careless copy, left it
        r = mailpair("verify", str(data))
        assert "warning" in r.stdout and "state.sqlite" in r.stdout and "0644" in r.stdout
        mailpair("pair", "up", "--dir", str(root), "--json")  # the node mends its directory at start
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert "warning" not in mailpair("verify", str(data)).stdout
    finally:
        os.umask(old)
        mailpair("pair", "down", "--dir", str(root), check=False)
