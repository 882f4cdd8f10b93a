"""The one durable-write helper: content replaced whole, private modes, nothing left behind."""

from __future__ import annotations

import json
import os
import stat

from mailpair.durable import write_atomic, write_json


def test_write_atomic_replaces_whole_with_a_private_mode(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    (tmp_path / "state.json.tmp").write_text("half of a write a crash interrupted")
    os.chmod(tmp_path / "state.json.tmp", 0o666)
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_json_round_trips_and_honours_a_given_mode(tmp_path):
    target = tmp_path / "pair.json"
    write_json(target, {"b": 1, "a": [1, 2]}, mode=0o644, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
