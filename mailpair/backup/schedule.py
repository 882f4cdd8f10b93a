"""The built-in backup schedule: a node backs up its databases by itself, on whichever node is
passive, full weekly and incremental daily unless told otherwise.

Rules this module keeps:
- Configured per node in DATA/backups.json (as DATA/replication.json tunes replication), read
  again at every check, so a schedule set or changed needs no restart; without the file (or
  without a target in it) the node takes no backups.
- The decision is a pure function (`due`) of the catalog's last full and last backup and the
  clock. The passive takes them from a Healthy copy only; the active only when
  `when_no_passive` is "active" and no copy of that database is Healthy (else it waits).
- An incremental that cannot be taken because its records were truncated (a new passive after a
  failover, say) becomes a full. A failed backup publishes nothing (target.py) and is retried at
  the next check; its error is kept for status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mailpair.backup import catalog
from mailpair.backup.manifest import Kind
from mailpair.backup.pin import pin_backed_up
from mailpair.backup.take import BackupError, take_backup
from mailpair.backup.target import open_target

logger = logging.getLogger("mailpair.backup")

SCHEDULE_FILE = "backups.json"
WEEK, DAY = 7 * 86400.0, 86400.0
UNSCHEDULED_CHECK_S = 2.0


@dataclass(frozen=True)
class ScheduleSettings:
    target: str
    full_every_s: float = WEEK
    incremental_every_s: float = DAY
    check_every_s: float = 60.0
    when_no_passive: str = "wait"  # or "active": back up the active while no copy is Healthy
    keep_full: int | None = None
    keep_days: float | None = None


def load_settings(data_dir: Path) -> ScheduleSettings | None:
    """DATA/backups.json, or None when backups are not scheduled; a bad file is logged and
    treated as no schedule (the node keeps running)."""
    path = Path(data_dir) / SCHEDULE_FILE
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(ScheduleSettings)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        s = ScheduleSettings(**raw)
        if s.when_no_passive not in ("wait", "active"):
            raise ValueError(f"when_no_passive is {s.when_no_passive!r}, not 'wait' or 'active'")
        return s
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        logger.error("%s: %s; no backups are scheduled", path, e)
        return None


def due(last_full: float | None, last_any: float | None, now: float, s: ScheduleSettings) -> Kind | None:
    """The backup the schedule wants now, if any (times are when backups finished)."""
    if last_full is None or now - last_full >= s.full_every_s:
        return Kind.FULL
    if last_any is None or now - last_any >= s.incremental_every_s:
        return Kind.INCREMENTAL
    return None


class Scheduler:
    """Runs the schedule on a node. copy_healthy(database) says whether a copy of it is Healthy
    (on the passive: its own; on the active: the peer's)."""

    def __init__(
        self, node: str, role: str, data_dir: Path, databases: Callable[[], list[str]], copy_healthy: Callable[[str], bool]
    ):
        self.node = node
        self.role = role
        self.data_dir = Path(data_dir)
        self.databases = databases
        self.copy_healthy = copy_healthy
        self.last: dict[str, dict[str, Any]] = {}  # database -> last outcome (for status)
        self._task: asyncio.Task | None = None

    def start(self) -> Scheduler:
        self._task = asyncio.create_task(self._run())
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            s = await asyncio.to_thread(load_settings, self.data_dir)
            if s is not None:
                for name in self.databases():
                    try:
                        await self.check(name, s)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # one database's failure must not stop the schedule
                        logger.exception("scheduled backup of %s failed", name)
                        self.last[name] = {"error": str(e), "time": time.time()}
            # unscheduled, the file is looked for often (a stat) so a schedule set takes soon
            await asyncio.sleep(s.check_every_s if s else UNSCHEDULED_CHECK_S)

    def mine(self, name: str, s: ScheduleSettings) -> bool:
        """Whether this node takes the backups of NAME now."""
        if self.role == "passive":
            return self.copy_healthy(name)
        return s.when_no_passive == "active" and not self.copy_healthy(name)

    async def check(self, name: str, s: ScheduleSettings) -> Kind | None:
        if not self.mine(name, s):
            return None
        target = open_target(s.target)
        backups = await asyncio.to_thread(catalog.manifests, target, name)
        last_full = max((m.finished for m in backups if m.kind is Kind.FULL), default=None)
        last_any = max((m.finished for m in backups), default=None)
        kind = due(last_full, last_any, time.time(), s)
        if kind is None:
            return None
        db_dir = self.data_dir / "databases" / name
        try:
            out = await asyncio.to_thread(take_backup, db_dir, self.node, kind, target)
        except BackupError as e:
            if kind is not Kind.INCREMENTAL or "take a full backup" not in str(e):
                raise
            logger.warning("backup of %s: %s; taking a full backup instead", name, e)
            kind = Kind.FULL
            out = await asyncio.to_thread(take_backup, db_dir, self.node, kind, target)
        await asyncio.to_thread(pin_backed_up, [self.data_dir], name, out.manifest)
        if s.keep_full is not None or s.keep_days is not None:
            await asyncio.to_thread(catalog.prune, target, name, s.keep_full, s.keep_days)
        self.last[name] = {**out.as_json(), "time": time.time()}
        logger.info(
            "scheduled %s backup of %s: %s (LSN %d..%d)",
            kind.value,
            name,
            out.manifest["id"],
            out.manifest["first_lsn"],
            out.manifest["last_lsn"],
        )
        return kind

    @classmethod
    def for_node(cls, node: Any) -> Scheduler:
        """The schedule of a running node (mailpair.node.Node): its databases, and the copy
        status its receiver (passive) or shipper (active) reports."""

        def copy_healthy(name: str) -> bool:
            views = (node.receiver.status() if node.receiver else []) + (node.shipper.status() if node.shipper else [])
            return any(v.get("database") == name and v.get("status") == "Healthy" for v in views)

        return cls(node.config.name, node.role, node.data, lambda: sorted(node.store.databases), copy_healthy)
