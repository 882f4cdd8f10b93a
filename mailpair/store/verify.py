"""`mailpair verify`: check every segment, every record and the state file, change nothing.

Reports the first bad LSN. A torn tail (an unfinished last write that was never acknowledged) is
reported but is not damage: the next open cuts it off.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from mailpair.filemodes import loose
from mailpair.store.log import LogCorruption, read_segment_header, scan_segment
from mailpair.store.schema import get_meta


@dataclass
class Report:
    database: str
    ok: bool = True
    segments: int = 0
    records: int = 0
    first_lsn: int | None = None
    last_lsn: int | None = None
    applied_lsn: int | None = None
    first_bad_lsn: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def bad(self, message: str, lsn: int | None = None) -> None:
        self.ok = False
        self.problems.append(message)
        if lsn is not None and self.first_bad_lsn is None:
            self.first_bad_lsn = lsn

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verify_database(path: Path) -> Report:
    path = Path(path)
    rep = Report(path.name)
    try:
        db_id = uuid.UUID((path / "id").read_text().strip()).bytes
    except (OSError, ValueError) as e:
        rep.bad(f"cannot read the database id: {e}")
        return rep
    segs = []
    for p in sorted((path / "log").glob("*.log")):
        try:
            segs.append(read_segment_header(p, db_id))
        except LogCorruption as e:
            rep.bad(str(e))
    segs.sort(key=lambda s: s.first_lsn)
    rep.segments = len(segs)
    expected = segs[0].first_lsn if segs else 1
    if segs:
        rep.first_lsn = segs[0].first_lsn
    for i, seg in enumerate(segs):
        if i and seg.prev_first_lsn != segs[i - 1].first_lsn:
            rep.bad(f"segment {seg.path.name} does not follow {segs[i - 1].path.name}", seg.first_lsn)
        if seg.first_lsn != expected:
            rep.bad(f"segment {seg.path.name} starts at LSN {seg.first_lsn}, expected {expected}", expected)
            break
        scan = scan_segment(seg, expected, is_last=i == len(segs) - 1)
        rep.records += scan.records
        expected += scan.records
        if scan.damage is not None:
            rep.bad(str(scan.damage), scan.damage.lsn)
            break
        if scan.torn_tail:
            rep.notes.append(
                f"torn tail after LSN {expected - 1} in {seg.path.name} "
                f"({scan.torn_tail} bytes, never acknowledged; cut at next open)"
            )
    rep.last_lsn = expected - 1
    state = path / "state.sqlite"
    if not state.exists():
        rep.notes.append("no state file yet (it is rebuilt from the log at open)")
        return rep
    try:
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
            if result != [("ok",)]:
                rep.bad("state file integrity check failed: " + "; ".join(r[0] for r in result[:5]))
            rep.applied_lsn = get_meta(conn, "applied_lsn", 0)
            bad = [blob_id for blob_id, crc, raw in conn.execute("SELECT id, crc, raw FROM blobs") if crc32c.crc32c(raw) != crc]
            if bad:
                rep.bad(
                    f"state file: {len(bad)} message(s) fail their checksum (first: the one from LSN {bad[0]}); "
                    "rebuild the state from the log or reseed the copy"
                )
            sid = get_meta(conn, "db_id")
            if sid is not None and sid != db_id:
                rep.bad("state file belongs to another database")
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        rep.bad(f"state file is unreadable: {e}")
        return rep
    for loose_path, mode in loose(path):
        rep.notes.append(f"warning: {loose_path} is mode {mode:04o}; group and others may read it (0600 files, 0700 directories)")
    if rep.applied_lsn is not None and rep.ok:
        if rep.applied_lsn > rep.last_lsn:
            rep.bad(f"state has applied LSN {rep.applied_lsn} beyond the log's end {rep.last_lsn}", rep.last_lsn + 1)
        elif rep.first_lsn is not None and rep.applied_lsn + 1 < rep.first_lsn:
            rep.bad(
                f"log starts at LSN {rep.first_lsn} but the state needs it from {rep.applied_lsn + 1}",
                rep.applied_lsn + 1,
            )
        elif rep.applied_lsn < rep.last_lsn:
            rep.notes.append(f"{rep.last_lsn - rep.applied_lsn} records not yet applied (replayed at next open)")
    return rep


def database_dirs(target: Path) -> list[Path]:
    """A database directory, or every database of a node's data directory."""
    target = Path(target)
    if (target / "id").exists():
        return [target]
    root = target / "databases"
    if root.exists():
        return sorted(p for p in root.iterdir() if (p / "id").exists())
    return []
