"""The transaction log: framed, checksummed records in fixed-size segment files.

Rules this module keeps:
- A record is on disk in one piece or is not acknowledged: every batch is written with one
  write() and made durable with one fdatasync (group commit), and the writer answers only after.
- Segments are preallocated to a fixed size, so fdatasync never has to flush a size change; a new
  segment is fsync'd together with its directory before the first record lands in it.
- Records never span segments; each segment header names the database id, its own first LSN and
  the first LSN of the segment it follows, so a gap or a foreign segment is seen at once.
- Reading stops at the first record that fails its checksum. In the last segment, a bad record
  with nothing valid after it is a torn tail (never acknowledged) and is cut off; anywhere else it
  is corruption, reported with the segment and the LSN, and nothing after it is read.

Record layout (little endian), padded to 8 bytes:
    crc32c u32 | length u32 | lsn u64 | epoch u64 | timestamp_us u64 | type u16 | pad u16 | payload
The checksum covers everything after itself, up to the end of the payload; `length` is the
payload's length.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import crc32c

from mailpair.durable import fsync_dir

SEGMENT_MAGIC = b"MPLOGSG1"
SEGMENT_HEADER = struct.Struct("<8sI16sQQQ")  # magic, version, db id, first lsn, prev first lsn, size
SEGMENT_HEADER_SIZE = 64  # header plus its crc, padded
RECORD_HEADER = struct.Struct("<IIQQQHH")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 36
ALIGN = 8
DEFAULT_SEGMENT_SIZE = 32 * 1024 * 1024
VERSION = 1
MARK_EVERY = 64  # records between a segment's offset marks (where reads from an LSN start)
# A read takes a segment file in windows that start small (a replay of one batch needs a few
# records) and double up to the largest as the read goes on.
FIRST_READ_WINDOW = 64 * 1024
READ_WINDOW = 1024 * 1024


class LogError(Exception):
    """The log cannot be read or written as asked."""


class LogCorruption(LogError):
    """A record or segment failed its checks; names where."""

    def __init__(self, message: str, segment: str | None = None, lsn: int | None = None):
        super().__init__(message)
        self.segment = segment
        self.lsn = lsn


class LogFull(LogError):
    """The disk (or the configured size limit) has no room for the next record."""


class Record(NamedTuple):  # a named tuple: made once per operation, twice as fast as a dataclass
    lsn: int
    epoch: int
    timestamp_us: int
    type: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_record(self.lsn, self.epoch, self.timestamp_us, self.type, self.payload)


def record_capacity(segment_size: int) -> int:
    """The largest record payload a segment of this size holds (records never span segments)."""
    return segment_size - SEGMENT_HEADER_SIZE - RECORD_HEADER_SIZE - ALIGN


def _padded(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


_AFTER_CRC = struct.Struct("<IQQQHH")  # RECORD_HEADER without its crc
_CRC = struct.Struct("<I")
_PADDING = [b"\0" * n for n in range(ALIGN)]


def encode_record(lsn: int, epoch: int, timestamp_us: int, rtype: int, payload: bytes) -> bytes:
    head = _AFTER_CRC.pack(len(payload), lsn, epoch, timestamp_us, rtype, 0)
    crc = crc32c.crc32c(payload, crc32c.crc32c(head))  # the crc of head + payload, without joining them first
    return b"".join((_CRC.pack(crc), head, payload, _PADDING[-(RECORD_HEADER_SIZE + len(payload)) % ALIGN]))


def decode_record(buf: bytes | memoryview, offset: int = 0) -> tuple[Record, int] | None:
    """Decode one record at offset; None when it is absent, short or fails its checksum."""
    if offset + RECORD_HEADER_SIZE > len(buf):
        return None
    crc, length, lsn, epoch, ts, rtype, _pad = RECORD_HEADER.unpack_from(buf, offset)
    start = offset + RECORD_HEADER_SIZE
    end = start + length
    if lsn == 0 or end > len(buf):
        return None
    payload = bytes(buf[start:end])
    # chained over the header and the payload, as encode_record computes it: no joined copy
    if crc32c.crc32c(payload, crc32c.crc32c(buf[offset + 4 : start])) != crc:
        return None
    return Record(lsn, epoch, ts, rtype, payload), offset + _padded(end - offset)


def _record_size(buf: bytes, pos: int) -> int:
    """Bytes the record at pos needs, as far as its header tells (the header alone if cut)."""
    if len(buf) - pos < RECORD_HEADER_SIZE:
        return RECORD_HEADER_SIZE
    return RECORD_HEADER_SIZE + struct.unpack_from("<I", buf, pos + 4)[0]


def _zero_from(fd: int, offset: int, size: int) -> bool:
    """Is the file all zeros from offset to its end?"""
    while offset < size:
        chunk = os.pread(fd, min(READ_WINDOW, size - offset), offset)
        if not chunk:
            return True
        if chunk.strip(b"\0"):
            return False
        offset += len(chunk)
    return True


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:016x}.log"


def _segment_header(db_id: bytes, first_lsn: int, prev_first: int, size: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, VERSION, db_id, first_lsn, prev_first, size)
    head += struct.pack("<I", crc32c.crc32c(head))
    return head + b"\0" * (SEGMENT_HEADER_SIZE - len(head))


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    path: Path
    first_lsn: int
    prev_first_lsn: int
    size: int


def read_segment_header(path: Path, db_id: bytes | None = None) -> SegmentInfo:
    with open(path, "rb") as f:
        head = f.read(SEGMENT_HEADER_SIZE)
    if len(head) < SEGMENT_HEADER_SIZE:
        raise LogCorruption(f"segment {path.name}: header is short", segment=path.name)
    magic, version, seg_db, first, prev, size = SEGMENT_HEADER.unpack_from(head)
    (crc,) = struct.unpack_from("<I", head, SEGMENT_HEADER.size)
    if magic != SEGMENT_MAGIC or crc32c.crc32c(head[: SEGMENT_HEADER.size]) != crc:
        raise LogCorruption(f"segment {path.name}: header is damaged", segment=path.name)
    if version != VERSION:
        raise LogCorruption(f"segment {path.name}: unknown version {version}", segment=path.name)
    if db_id is not None and seg_db != db_id:
        raise LogCorruption(
            f"segment {path.name}: belongs to database {uuid.UUID(bytes=seg_db)}, not this one",
            segment=path.name,
        )
    if segment_name(first) != path.name:
        raise LogCorruption(f"segment {path.name}: header says first LSN {first}", segment=path.name)
    return SegmentInfo(path, first, prev, size)


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a read-only scan of one segment found: its records in order up to `end`, then either
    nothing but zeros, a torn tail, or damage."""

    segment: SegmentInfo
    records: int  # valid records, each with the LSN after the one before
    last: Record | None  # the last of them
    end: int  # offset after the last valid record, where the next one would go
    damage: LogCorruption | None  # why the segment is damaged (the scan stopped there), or None
    torn_tail: int  # bytes of an unfinished last write after `end` (never acknowledged), or 0


def scan_segment(
    seg: SegmentInfo,
    expected: int,
    is_last: bool,
    on_record: Callable[[Record, int], None] | None = None,
) -> SegmentScan:
    """Read one segment and check it, changing nothing: every record must carry the LSN after the
    one before (the first, `expected`). After the last valid record the rest must be zeros; in the
    last segment (is_last) it may instead be a torn tail: bytes with no valid record beyond them.
    Anything else is damage, returned, not raised. on_record(record, offset) sees each record.
    The one scanner for the log's open (which raises the damage and cuts the torn tail), verify
    and backup verify."""
    with open(seg.path, "rb") as f:
        buf = f.read()
    off = SEGMENT_HEADER_SIZE
    last: Record | None = None
    count = 0
    while True:
        dec = decode_record(buf, off)
        if dec is None:
            break
        rec, nxt = dec
        if rec.lsn != expected:
            damage = LogCorruption(
                f"segment {seg.path.name}: record at offset {off} has LSN {rec.lsn}, expected {expected}",
                segment=seg.path.name,
                lsn=expected,
            )
            return SegmentScan(seg, count, last, off, damage, 0)
        if on_record is not None:
            on_record(rec, off)
        last, off, expected, count = rec, nxt, expected + 1, count + 1
    rest = buf[off:]
    if not rest.strip(b"\0"):
        return SegmentScan(seg, count, last, off, None, 0)
    # Something that is not a valid record follows. It is a torn tail only if nothing valid lies
    # beyond it: a valid later record means acknowledged data is behind damage.
    if not is_last or _valid_record_after(buf, off, expected):
        damage = LogCorruption(
            f"segment {seg.path.name}: record LSN {expected} at offset {off} is damaged",
            segment=seg.path.name,
            lsn=expected,
        )
        return SegmentScan(seg, count, last, off, damage, 0)
    return SegmentScan(seg, count, last, off, None, len(rest.rstrip(b"\0")))


class TransactionLog:
    """One database's log directory. Appends come from one thread (the database's writer);
    readers (replay, shipping, verify) may read concurrently from other threads."""

    def __init__(
        self,
        directory: Path,
        db_id: bytes,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_bytes: int | None = None,
        fsync: bool = True,
    ):
        self.dir = Path(directory)
        self.db_id = db_id
        self.segment_size = segment_size
        self.max_bytes = max_bytes
        self.fsync_enabled = fsync
        self.fsync_count = 0
        self._lock = threading.Lock()  # guards segment list and head position
        self._fd: int | None = None
        self._seg: SegmentInfo | None = None
        self._write_offset = 0
        self.last_lsn = 0
        self.last_epoch = 0
        self.last_timestamp_us = 0
        self.torn_tail_cut: int = 0  # bytes cut at open, for reporting
        self._segments: list[SegmentInfo] = []
        # Per segment (by first LSN): sorted (LSNs, offsets) of every MARK_EVERY-th record or so,
        # so a read from an LSN starts near it instead of decoding the segment from its start
        # (the passive's replayer reads a few hundred records at a time).
        self._marks: dict[int, tuple[list[int], list[int]]] = {}
        self._mark_lsn = 0  # the current segment's last mark (its first LSN if none)
        self._unsynced_marks: list[tuple[int, int, int]] = []  # (segment, lsn, offset) until sync
        # what was written since the last sync, (segment, offset, length): a batch that fails is
        # undone whole, in every segment it reached
        self._unsynced_writes: list[tuple[SegmentInfo, int, int]] = []

    # ------------------------------------------------------------------ open / scan
    def open(self) -> None:
        """Scan every segment, check the chain, cut a torn tail, and position for appends."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()  # a segment whose creation a crash interrupted; it never held a record
        self._segments = self._list_segments()
        self._check_chain()
        if not self._segments:
            return
        last = self._segments[-1]
        last_end = SEGMENT_HEADER_SIZE
        expected = self._first_lsn_expected()
        for seg in self._segments:
            end, last_rec = self._scan_segment(seg, expected, is_last=seg is last)
            if last_rec is not None:
                expected = last_rec.lsn + 1
                self.last_lsn = last_rec.lsn
                self.last_epoch = last_rec.epoch
                self.last_timestamp_us = last_rec.timestamp_us
            elif seg.first_lsn != expected:
                raise LogCorruption(
                    f"segment {seg.path.name}: starts at LSN {seg.first_lsn}, expected {expected}",
                    segment=seg.path.name,
                    lsn=expected,
                )
            if seg is last:
                last_end = end
        if self.last_lsn == 0 and self._segments:
            self.last_lsn = self._segments[0].first_lsn - 1
        self._seg = last
        self._fd = os.open(last.path, os.O_RDWR)
        self._write_offset = last_end
        self._mark_lsn = self._last_mark(last)

    def _first_lsn_expected(self) -> int:
        return self._segments[0].first_lsn if self._segments else 1

    def _list_segments(self) -> list[SegmentInfo]:
        out = []
        for p in sorted(self.dir.glob("*.log")):
            out.append(read_segment_header(p, self.db_id))
        out.sort(key=lambda s: s.first_lsn)
        return out

    def _check_chain(self) -> None:
        for prev, seg in zip(self._segments, self._segments[1:], strict=False):
            if seg.prev_first_lsn != prev.first_lsn:
                raise LogCorruption(
                    f"segment {seg.path.name}: follows {segment_name(seg.prev_first_lsn)}, "
                    f"but the segment before it is {prev.path.name}",
                    segment=seg.path.name,
                    lsn=seg.first_lsn,
                )

    def _scan_segment(self, seg: SegmentInfo, expected: int, is_last: bool) -> tuple[int, Record | None]:
        """scan_segment, keeping offset marks; damage is raised and a torn tail is cut (zeroed
        durably) so appends go on from the last whole record."""
        lsns, offsets = self._marks.setdefault(seg.first_lsn, ([], []))

        def mark(rec: Record, off: int) -> None:
            if (rec.lsn - seg.first_lsn) % MARK_EVERY == 0:
                lsns.append(rec.lsn)
                offsets.append(off)

        scan = scan_segment(seg, expected, is_last, mark)
        if scan.damage is not None:
            raise scan.damage
        if scan.torn_tail:
            self.torn_tail_cut = scan.torn_tail
            with open(seg.path, "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(scan.end)
                f.write(b"\0" * (size - scan.end))
                f.flush()
                os.fsync(f.fileno())
        return scan.end, scan.last

    # ------------------------------------------------------------------ append
    def append(self, raw_records: list[bytes], last: Record) -> None:
        """Write already-encoded records (contiguous LSNs ending with `last`) and make them durable.

        The active encodes its own records; the passive appends the bytes it received and
        inspected. Either way the same bytes land on disk.
        """
        try:
            self.write(raw_records)
            self.sync(last)
        except BaseException:
            self.forget_unsynced()
            raise

    def write(self, raw_records: list[bytes]) -> None:
        """Write records after the last ones, not yet durable: `sync` makes them so and only then
        moves last_lsn, so no reader sees them before. A batch goes into one segment (a new one
        if the current one has no room for all of it), so a refused new segment leaves nothing
        half written; a write that fails is zeroed again, so no record of it can be found later."""
        if not raw_records:
            return
        with self._lock:
            total = sum(len(r) for r in raw_records)
            fits_one = total <= self.segment_size - SEGMENT_HEADER_SIZE
            if self._fd is not None and fits_one and self._write_offset + total > self._seg.size:
                self._new_segment(struct.unpack_from("<Q", raw_records[0], 8)[0])
            # Now the batch fits where the log ends, or it is bigger than a segment and is
            # spread over as many as it takes.
            batch: list[bytes] = []
            size = 0
            for raw in raw_records:
                if len(raw) > self.segment_size - SEGMENT_HEADER_SIZE:
                    raise LogError(f"record of {len(raw)} bytes does not fit a segment")
                lsn = struct.unpack_from("<Q", raw, 8)[0]
                if self._fd is None or self._write_offset + size + len(raw) > self._seg.size:
                    if batch:
                        self._write(b"".join(batch))
                        batch, size = [], 0
                    self._new_segment(lsn)
                if lsn - self._mark_lsn >= MARK_EVERY:
                    self._unsynced_marks.append((self._seg.first_lsn, lsn, self._write_offset + size))
                    self._mark_lsn = lsn
                batch.append(raw)
                size += len(raw)
            if batch:
                self._write(b"".join(batch))

    def sync(self, last: Record) -> None:
        """Make what `write` wrote durable, then move the log's end to `last`."""
        self._sync()
        with self._lock:
            for seg_first, lsn, off in self._unsynced_marks:
                lsns, offsets = self._marks.setdefault(seg_first, ([], []))
                lsns.append(lsn)
                offsets.append(off)
            self._unsynced_marks.clear()
            self._unsynced_writes.clear()
            self.last_lsn = last.lsn
            self.last_epoch = last.epoch
            self.last_timestamp_us = last.timestamp_us

    def forget_unsynced(self) -> None:
        """Undo what was written after the last sync (a batch whose sync failed, or that was
        refused after it was written), so the next batch overwrites it and a later scan cannot
        take it for records. A batch bigger than a segment may have reached new segments, and
        starting one made the part before durable: the new segments go and that part is zeroed
        durably too."""
        with self._lock:
            self._unsynced_marks.clear()
            writes, self._unsynced_writes = self._unsynced_writes, []
            if not writes:
                return
            first_seg, first_off = writes[0][0], writes[0][1]
            dropped = False
            while self._seg is not first_seg and len(self._segments) > 1:
                # a segment this batch started: it holds nothing but the batch's records
                seg = self._segments.pop()
                self._marks.pop(seg.first_lsn, None)
                os.close(self._fd)
                seg.path.unlink(missing_ok=True)
                self._seg = self._segments[-1]
                self._fd = os.open(self._seg.path, os.O_RDWR)
                dropped = True
            end = max((off + n for seg, off, n in writes if seg is self._seg), default=first_off)
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, bytes(end - first_off), first_off)
                if dropped:
                    os.fdatasync(self._fd)
                    fsync_dir(self.dir)
            self._write_offset = first_off
            self._mark_lsn = self._last_mark(self._seg)

    def _last_mark(self, seg: SegmentInfo) -> int:
        marks = self._marks.get(seg.first_lsn)
        return marks[0][-1] if marks and marks[0] else seg.first_lsn

    def _write(self, data: bytes) -> None:
        """Write records (whole ones, the first at the start of data) where the log ends."""
        self._unsynced_writes.append((self._seg, self._write_offset, len(data)))
        try:
            n = os.pwrite(self._fd, data, self._write_offset)
        except OSError as e:
            with contextlib.suppress(OSError):  # whatever part of it landed must not read as records
                os.pwrite(self._fd, bytes(len(data)), self._write_offset)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise LogFull("no space left for the log") from e
            raise
        if n != len(data):
            raise LogError(f"short write to {self._seg.path.name}: {n} of {len(data)} bytes")
        self._write_offset += n

    def _sync(self) -> None:
        if self.fsync_enabled and self._fd is not None:
            os.fdatasync(self._fd)
            self.fsync_count += 1

    def _new_segment(self, first_lsn: int) -> None:
        if self.max_bytes is not None:
            if (len(self._segments) + 1) * self.segment_size > self.max_bytes:
                raise LogFull(f"log size limit reached ({self.max_bytes} bytes in {len(self._segments)} segments)")
        if self._fd is not None and self.fsync_enabled:
            # The old segment is complete and durable before a new one exists, so only the last
            # segment can ever hold a torn tail.
            os.fdatasync(self._fd)
        prev_first = self._segments[-1].first_lsn if self._segments else 0
        path = self.dir / segment_name(first_lsn)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.segment_size)
            os.pwrite(fd, _segment_header(self.db_id, first_lsn, prev_first, self.segment_size), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise LogFull("no space left for a new log segment") from e
            raise
        os.rename(tmp, path)
        fsync_dir(self.dir)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._seg = SegmentInfo(path, first_lsn, prev_first, self.segment_size)
        self._segments.append(self._seg)
        self._write_offset = SEGMENT_HEADER_SIZE
        self._mark_lsn = first_lsn  # a read from the start of a segment needs no mark

    # ------------------------------------------------------------------ read
    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            return list(self._segments)

    @property
    def first_lsn(self) -> int:
        segs = self.segments()
        return segs[0].first_lsn if segs else self.last_lsn + 1

    def read_from(self, lsn: int, upto: int | None = None) -> Iterator[Record]:
        """Records with LSN >= lsn (and <= upto), checked; raises LogCorruption on damage."""
        upto = self.last_lsn if upto is None else upto
        segs = self.segments()
        if lsn > upto:
            return
        if segs and lsn < segs[0].first_lsn:
            raise LogError(f"LSN {lsn} is no longer in the log (it starts at {segs[0].first_lsn})")
        want = lsn
        for i, seg in enumerate(segs):
            nxt_first = segs[i + 1].first_lsn if i + 1 < len(segs) else None
            if nxt_first is not None and nxt_first <= want:
                continue
            if seg.first_lsn > upto:
                break
            for rec in self._read_segment(seg, want, upto):
                if rec.lsn != want:
                    raise LogCorruption(
                        f"segment {seg.path.name}: found LSN {rec.lsn} where {want} belongs",
                        segment=seg.path.name,
                        lsn=want,
                    )
                want += 1
                yield rec
            if want > upto:
                return
        if want <= upto:
            raise LogCorruption(f"record LSN {want} is missing from the log", lsn=want)

    def _read_segment(self, seg: SegmentInfo, lsn: int, upto: int) -> Iterator[Record]:
        off, expected = SEGMENT_HEADER_SIZE, seg.first_lsn
        with self._lock:
            marks = self._marks.get(seg.first_lsn)
            i = bisect.bisect_right(marks[0], lsn) - 1 if marks else -1
            if i >= 0:
                expected, off = marks[0][i], marks[1][i]
        name = seg.path.name
        try:
            with open(seg.path, "rb", buffering=0) as f:
                fd = f.fileno()
                size = os.fstat(fd).st_size
                base, buf, pos = off, b"", 0  # buf holds the file from offset base on
                window = FIRST_READ_WINDOW
                while expected <= upto:
                    # Until the window holds the whole record: first its header, then as much as
                    # the header's length asks for (a 25 MB message is one record), never past the
                    # file's end. A length that runs past the file is damage, told apart below.
                    need = _record_size(buf, pos)
                    while len(buf) - pos < need and base + len(buf) < size:
                        base += pos  # the next record is not all in the window: move it here
                        buf, pos = os.pread(fd, max(window, min(need, size - base)), base), 0
                        window = min(2 * window, READ_WINDOW)
                        need = _record_size(buf, pos)
                    dec = decode_record(buf, pos)
                    if dec is None:
                        if _zero_from(fd, base + pos, size):
                            return  # the end of this segment's records; the next segment goes on
                        raise LogCorruption(f"segment {name}: record LSN {expected} is damaged", segment=name, lsn=expected)
                    rec, pos = dec
                    if rec.lsn != expected:
                        raise LogCorruption(
                            f"segment {name}: found LSN {rec.lsn} where {expected} belongs", segment=name, lsn=expected
                        )
                    if rec.lsn >= lsn:
                        yield rec
                    expected += 1
        except OSError as e:  # an unreadable disk block: the records from here on cannot be had
            raise LogCorruption(f"segment {name}: cannot read record LSN {expected}: {e}", segment=name, lsn=expected) from e

    def truncate_before(self, lsn: int) -> list[str]:
        """Delete whole segments every record of which is below lsn. Returns the names removed."""
        removed = []
        with self._lock:
            while len(self._segments) > 1 and self._segments[1].first_lsn <= lsn:
                seg = self._segments.pop(0)
                seg.path.unlink()
                self._marks.pop(seg.first_lsn, None)
                removed.append(seg.path.name)
        if removed:
            fsync_dir(self.dir)
        return removed

    def bytes_from(self, lsn: int) -> int:
        """Bytes of the segments a pin at lsn keeps: the one holding it and all after it (what
        truncate_before(lsn) leaves)."""
        segs = self.segments()
        return sum(seg.size for i, seg in enumerate(segs) if i + 1 == len(segs) or segs[i + 1].first_lsn > lsn)

    def bytes_on_disk(self) -> int:
        return sum(s.size for s in self.segments())

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _valid_record_after(buf: bytes, off: int, expected: int) -> bool:
    """Is there a valid record with LSN >= expected anywhere after off? Only the non-zero part
    of the segment is searched; records are 8-aligned, so the LSN field is too."""
    end = len(buf.rstrip(b"\0"))
    pos = off + ALIGN
    while pos + RECORD_HEADER_SIZE <= end + RECORD_HEADER_SIZE and pos + 16 <= len(buf):
        (lsn,) = struct.unpack_from("<Q", buf, pos + 8)
        if expected <= lsn < expected + (1 << 32):
            dec = decode_record(buf, pos)
            if dec is not None:
                return True
        pos += ALIGN
    return False
