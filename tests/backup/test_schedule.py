"""The built-in schedule: the decision as a pure function, and a real pair whose passive backs
itself up once DATA/backups.json names a target."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from mailpair.backup.manifest import Kind
from mailpair.backup.schedule import SCHEDULE_FILE, ScheduleSettings, due, load_settings
from tests.backup.conftest import list_backups, verify

S = ScheduleSettings(target="/t")


def test_due_full_weekly_incremental_daily():
    now = 1e9
    assert due(None, None, now, S) is Kind.FULL
    assert due(now - 3600, now - 3600, now, S) is None
    assert due(now - 3 * 86400, now - 86400, now, S) is Kind.INCREMENTAL
    assert due(now - 3 * 86400, now - 3600, now, S) is None
    assert due(now - 7 * 86400, now - 3600, now, S) is Kind.FULL


def test_settings_file(tmp_path):
    assert load_settings(tmp_path) is None
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps({"target": "/b", "incremental_every_s": 5}))
    s = load_settings(tmp_path)
    assert s.target == "/b" and s.incremental_every_s == 5 and s.full_every_s == 7 * 86400
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps({"target": "/b", "when_no_passive": "sometimes"}))
    assert load_settings(tmp_path) is None  # refused, logged, no schedule
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps({"target": "/b", "typo_every_s": 5}))
    assert load_settings(tmp_path) is None


def test_the_passive_backs_itself_up(mail_pair, tmp_path):
    p = mail_pair
    target = tmp_path / "scheduled"
    schedule = {"target": str(target), "incremental_every_s": 1.0, "check_every_s": 0.3}
    for node in p.info["nodes"]:
        (Path(node["data"]) / SCHEDULE_FILE).write_text(json.dumps(schedule))
    try:
        passive = p._name_of("passive")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list_backups(target):
            time.sleep(0.3)
        first = list_backups(target)
        assert first and first[0]["kind"] == "full" and first[0]["node"] == passive
        p.deliver("user2", [100 * 1024], seed=700)
        p.caught_up()
        while time.monotonic() < deadline and not any(
            b["kind"] == "incremental" and b["last_lsn"] >= b["first_lsn"] for b in list_backups(target)
        ):
            time.sleep(0.3)
        backups = list_backups(target)
        assert any(b["kind"] == "incremental" and b["last_lsn"] >= b["first_lsn"] for b in backups), backups
        assert {b["node"] for b in backups} == {passive}, "the active took a backup while the passive was Healthy"
        assert verify(target).returncode == 0
    finally:
        for node in p.info["nodes"]:
            (Path(node["data"]) / SCHEDULE_FILE).unlink(missing_ok=True)


def test_with_no_passive_the_active_backs_up_only_when_told(mail_pair, tmp_path):
    """Runs last in this module: it stops the passive."""
    p = mail_pair
    active, passive = p.node("active"), p.node("passive")
    os.kill(passive["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(c["status"] == "Healthy" for c in p.copies()):
        time.sleep(0.3)
    target = tmp_path / "fallback"
    data = Path(active["data"]) / SCHEDULE_FILE
    try:
        data.write_text(json.dumps({"target": str(target), "check_every_s": 0.3}))
        time.sleep(3)  # more than a check: the default ("wait") takes nothing
        assert list_backups(target) == []
        data.write_text(json.dumps({"target": str(target), "check_every_s": 0.3, "when_no_passive": "active"}))
        while time.monotonic() < deadline and not list_backups(target):
            time.sleep(0.3)
        backups = list_backups(target)
        assert backups and backups[0]["node"] == active["name"] and backups[0]["kind"] == "full"
    finally:
        data.unlink(missing_ok=True)
