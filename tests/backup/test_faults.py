"""Backups that go wrong: a damaged file, a backup killed mid-way, an incremental with no full,
and retention, on a real pair through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.backup.conftest import list_backups, verify

MiB = 1024 * 1024


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x04]))


def test_an_incremental_needs_a_full(mail_pair, tmp_path):
    r = mail_pair.cli("backup", "incremental", "--dir", str(mail_pair.root), "--to", str(tmp_path / "t"), check=False)
    assert r.returncode != 0 and "take a full backup first" in r.stderr
    assert list_backups(tmp_path / "t") == []


def test_a_damaged_backup_file_fails_verify_naming_it(mail_pair, tmp_path):
    p = mail_pair
    target = tmp_path / "backups"
    p.deliver("user2", [3 * 1024, 80 * 1024], seed=300)
    p.caught_up()
    full = p.backup("full", target)
    p.deliver("user2", [2 * MiB, 4 * 1024], seed=310)
    p.caught_up()
    inc = p.backup("incremental", target)
    assert verify(target).returncode == 0
    snapshot = target / "mail" / full["id"] / "state.sqlite"
    logs = sorted((target / "mail" / inc["id"] / "log").iterdir())
    assert logs
    for path in (snapshot, logs[-1]):
        at = path.stat().st_size - 100  # inside the last page / the last record's payload
        _flip(path, at)
        r = verify(target)
        assert r.returncode == 1, r.stdout
        assert str(path) in r.stdout and "SHA-256" in r.stdout
        bad = p.cli("restore", "--from", str(target), "--to", str(tmp_path / f"r-{path.name}"), check=False)
        assert bad.returncode != 0 and str(path) in bad.stderr
        _flip(path, at)  # back as it was
        assert verify(target).returncode == 0
    # A damaged manifest, and a missing file, are named too.
    (target / "mail" / inc["id"] / "manifest.json").write_text("{not json")
    r = verify(target)
    assert r.returncode == 1 and inc["id"] in r.stdout


def test_a_killed_backup_never_looks_complete(mail_pair, tmp_path):
    p = mail_pair
    target = tmp_path / "backups"
    p.deliver("user1", [4 * MiB] * 8, seed=400)  # enough that a full takes a moment
    p.caught_up()
    first = p.backup("full", target)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailpair", "backup", "full", "--dir", str(p.root), "--to", str(target), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((target / "mail").glob(".pending-*")):
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((target / "mail").glob(".pending-*")), "the backup finished before it could be killed"
    assert [b["id"] for b in list_backups(target)] == [first["id"]]
    assert verify(target).returncode == 0
    # the next backup works, and its chain follows the complete one
    inc = p.backup("incremental", target)
    assert inc["first_lsn"] == first["last_lsn"] + 1
    assert [b["id"] for b in list_backups(target)] == [first["id"], inc["id"]]


def test_differential_retention_and_from_active(mail_pair, tmp_path):
    p = mail_pair
    target = tmp_path / "backups"
    f1 = p.backup("full", target)
    p.deliver("user2", [5000], seed=500)
    p.caught_up()
    i1 = p.backup("incremental", target)
    f2 = p.backup("full", target)
    p.deliver("user2", [6000], seed=510)
    p.caught_up()
    i2 = p.backup("incremental", target)
    p.deliver("user2", [7000], seed=520)
    p.caught_up()
    r = p.cli("backup", "differential", "--dir", str(p.root), "--to", str(target), "--json", "--from-active")
    d1 = json.loads(r.stdout)
    assert "active node" in r.stderr and d1["node"] == p._name_of("active")
    assert d1["first_lsn"] == f2["last_lsn"] + 1 and d1["last_lsn"] > i2["last_lsn"]
    assert i1["first_lsn"] == f1["last_lsn"] + 1
    assert verify(target).returncode == 0
    pruned = p.cli("backup", "prune", "--to", str(target), "--keep-full", "1")
    assert f1["id"] in pruned.stdout and i1["id"] in pruned.stdout
    assert [b["id"] for b in list_backups(target)] == [f2["id"], i2["id"], d1["id"]]
    assert verify(target).returncode == 0
    # restore from the differential alone reaches its end
    p.cli("restore", "--from", str(target), "--to", str(tmp_path / "r"))
    out = json.loads((tmp_path / "r" / "recovery.json").read_text())
    assert out["applied_lsn"] == d1["last_lsn"]
