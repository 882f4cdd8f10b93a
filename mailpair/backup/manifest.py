"""A backup's manifest: what it holds and how it fits in its chain, as one JSON object.

Rules this module keeps:
- The manifest is the backup: a backup without one is not a backup (the target publishes it
  last). It names the database (name and id), the node it came from, the LSN range, the epochs
  its records carry, start and end times, the record times it spans, and every file with its
  size and SHA-256.
- LSN ranges: a full holds the state at `snapshot_lsn` and the log records after it up to
  `last_lsn`; its `first_lsn` is `snapshot_lsn` (the earliest point it restores to). An
  incremental or differential holds the records `first_lsn`..`last_lsn` (none when last_lsn is
  first_lsn - 1), following its `base`: the last backup of any kind (incremental) or the last
  full (differential); `full` names the full its chain starts from.
- Ids sort by start time, so a database's backups list oldest first.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMAT = 1
STATE_FILE = "state.sqlite"


class Kind(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    DIFFERENTIAL = "differential"


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC, to the microsecond."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO 8601 (UTC unless it says otherwise; a trailing Z is allowed) as seconds since the epoch."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def new_id(kind: Kind, started: float) -> str:
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{kind.value}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Manifest:
    """A read manifest, with the fields the catalog decides on."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return self.raw["id"]

    @property
    def kind(self) -> Kind:
        return Kind(self.raw["kind"])

    @property
    def db_id(self) -> str:
        return self.raw["db_id"]

    @property
    def base(self) -> str | None:
        return self.raw.get("base")

    @property
    def full(self) -> str:
        return self.raw["full"]

    @property
    def first_lsn(self) -> int:
        return int(self.raw["first_lsn"])

    @property
    def last_lsn(self) -> int:
        return int(self.raw["last_lsn"])

    @property
    def snapshot_lsn(self) -> int | None:
        return self.raw.get("snapshot_lsn")

    @property
    def finished(self) -> float:
        return parse_time(self.raw["finished"])

    @property
    def snapshot_time(self) -> float | None:
        t = self.raw.get("snapshot_time")
        return None if t is None else parse_time(t)

    @property
    def files(self) -> list[dict[str, Any]]:
        return self.raw["files"]

    @property
    def bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files)

    def log_files(self) -> list[dict[str, Any]]:
        return [f for f in self.files if f["name"].startswith("log/")]

    def summary(self) -> dict[str, Any]:
        """The catalog's line for `backup list` (the command-line contract's keys first)."""
        r = self.raw
        return {
            "id": self.id,
            "kind": self.kind.value,
            "first_lsn": self.first_lsn,
            "last_lsn": self.last_lsn,
            "started": r["started"],
            "finished": r["finished"],
            "bytes": self.bytes,
            "database": r["database"],
            "node": r["node"],
            "base": self.base,
        }


def check_fields(raw: dict[str, Any]) -> None:
    """ValueError naming the first field a manifest lacks or has wrong."""
    need = {
        "format": int,
        "id": str,
        "kind": str,
        "database": str,
        "db_id": str,
        "node": str,
        "full": str,
        "first_lsn": int,
        "last_lsn": int,
        "epochs": list,
        "started": str,
        "finished": str,
        "files": list,
    }
    for key, typ in need.items():
        if not isinstance(raw.get(key), typ):
            raise ValueError(f"manifest field {key!r} is missing or not a {typ.__name__}")
    if raw["format"] != FORMAT:
        raise ValueError(f"manifest format {raw['format']} is not {FORMAT}")
    Kind(raw["kind"])
    for f in raw["files"]:
        if not (
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and isinstance(f.get("size"), int)
            and isinstance(f.get("sha256"), str)
        ):
            raise ValueError(f"manifest file entry {f!r} lacks name, size or sha256")
    if raw["kind"] == Kind.FULL and not isinstance(raw.get("snapshot_lsn"), int):
        raise ValueError("a full backup's manifest lacks snapshot_lsn")
