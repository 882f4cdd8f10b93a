"""The log part of a backup: the records of an LSN range, copied from a database's log directory
as segment files, and read back.

Rules this module keeps:
- The node's log is only read, never changed, and the node goes on writing beside it: a segment
  is read whole and decoded from its header; reading stops at the first record that does not
  decode (the tail the receiver or the writer is still writing), so only whole, checksummed
  records are taken.
- A copied segment keeps its name and header and is cut right after the last record taken, so
  the log's own read-only scanner (store/log.py scan_segment) checks it in a backup as in a log:
  every record's CRC, and every LSN following the one before. Records before the range that share
  the first segment travel with it; the manifest's LSN range says which records the backup adds.
- A range whose first record is no longer in the log (truncated) is an error, never a gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailpair.store.log import (
    SEGMENT_HEADER_SIZE,
    LogCorruption,
    Record,
    SegmentInfo,
    decode_record,
    read_segment_header,
    scan_segment,
)


class LogGap(Exception):
    """Records a backup needs are no longer in the node's log."""


@dataclass
class LogPiece:
    """One segment's share of a backup: its bytes up to the last record taken."""

    name: str
    data: bytes
    first_lsn: int  # the segment's first record
    last: Record  # the last record taken


@dataclass
class RangeSummary:
    """What the records taken say: the LSN range, epochs and record times."""

    first_lsn: int
    last_lsn: int
    epochs: list[list[int]] = field(default_factory=list)  # [epoch, first LSN in it]
    first_time_us: int | None = None
    last_time_us: int | None = None

    def add(self, rec: Record) -> None:
        if not self.epochs or self.epochs[-1][0] != rec.epoch:
            self.epochs.append([rec.epoch, rec.lsn])
        if self.first_time_us is None:
            self.first_time_us = rec.timestamp_us
        self.last_time_us = rec.timestamp_us
        self.last_lsn = rec.lsn


def _segments(log_dir: Path, db_id: bytes) -> list[SegmentInfo]:
    segs = []
    for p in sorted(Path(log_dir).glob("*.log")):
        try:
            segs.append(read_segment_header(p, db_id))
        except FileNotFoundError:
            continue  # truncated while we listed
    return sorted(segs, key=lambda s: s.first_lsn)


def copy_range(log_dir: Path, db_id: bytes, first_lsn: int, summary: RangeSummary) -> Iterator[LogPiece]:
    """Segments holding records from FIRST_LSN to the end of the log as it is now, each cut after
    its last whole record; SUMMARY gathers the range's LSNs, epochs and times. Nothing is yielded
    when the log holds no record from FIRST_LSN on; LogGap if FIRST_LSN is gone."""
    segs = _segments(log_dir, db_id)
    start = 0
    for i, seg in enumerate(segs):
        if seg.first_lsn <= first_lsn:
            start = i
    expected: int | None = None
    for seg in segs[start:]:
        if expected is None and seg.first_lsn > first_lsn:
            raise LogGap(f"the log starts at LSN {seg.first_lsn}; records from {first_lsn} are no longer in it")
        if expected is not None and seg.first_lsn != expected:
            break  # a segment being created, or the tail changed under us: the range ends here
        try:
            buf = seg.path.read_bytes()
        except FileNotFoundError:
            if expected is None:
                raise LogGap(f"segment {seg.path.name} holding LSN {first_lsn} was truncated while being read") from None
            break
        off, nxt_expected, last = SEGMENT_HEADER_SIZE, seg.first_lsn, None
        end = off
        while (dec := decode_record(buf, off)) is not None:
            rec, nxt = dec
            if rec.lsn != nxt_expected:
                break
            if rec.lsn >= first_lsn:
                summary.add(rec)
            last, off, nxt_expected, end = rec, nxt, nxt_expected + 1, nxt
        if last is None or last.lsn < first_lsn:
            if expected is None and seg is segs[-1] and nxt_expected == first_lsn:
                return  # nothing new: the log ends right before the range
            if expected is None and seg is not segs[-1]:
                expected = nxt_expected  # the range starts in the next segment
                continue
            return
        yield LogPiece(seg.path.name, buf[:end], seg.first_lsn, last)
        expected = nxt_expected


def read_records(path: Path, db_id: bytes) -> Iterator[Record]:
    """Every record of a backed-up segment file, checked by the log's own scanner; LogCorruption
    (naming the file) if the file is damaged."""
    seg = read_segment_header(path, db_id)
    records: list[Record] = []
    scan = scan_segment(seg, seg.first_lsn, is_last=False, on_record=lambda rec, _off: records.append(rec))
    if scan.damage is not None:
        raise LogCorruption(f"{path}: {scan.damage}", segment=path.name, lsn=scan.damage.lsn)
    yield from records
