"""Reading the log from any LSN: the same records whether the log was just written or reopened,
across segment boundaries, and damage still found where a read passes it."""

from __future__ import annotations

import os
import random

import pytest

from mailpair.store.log import SEGMENT_HEADER_SIZE, LogCorruption, Record, TransactionLog, decode_record

DB_ID = bytes(range(16))
SEGMENT = 64 * 1024


def _payload(lsn: int) -> bytes:
    return (f"record {lsn} ".encode() * 40)[: 100 + (lsn * 37) % 900]


def _write(log: TransactionLog, first: int, count: int) -> None:
    recs = [Record(lsn, 1, 1_000_000 + lsn, 3, _payload(lsn)) for lsn in range(first, first + count)]
    log.append([r.encode() for r in recs], recs[-1])


def _filled(path, total: int = 1500, seed: int = 7) -> TransactionLog:
    log = TransactionLog(path, DB_ID, segment_size=SEGMENT)
    log.open()
    rnd = random.Random(seed)
    lsn = 1
    while lsn <= total:
        n = min(total - lsn + 1, rnd.choice([1, 2, 5, 17, 64, 130]))
        _write(log, lsn, n)
        lsn += n
    return log


def _check_reads(log: TransactionLog, total: int, rnd: random.Random) -> None:
    for _ in range(200):
        start = rnd.randint(1, total)
        upto = rnd.randint(start, min(total, start + rnd.choice([0, 3, 60, 700])))
        got = list(log.read_from(start, upto))
        assert [r.lsn for r in got] == list(range(start, upto + 1))
        assert all(r.payload == _payload(r.lsn) and r.timestamp_us == 1_000_000 + r.lsn for r in got)


def test_reads_from_any_lsn_live_and_after_reopen(tmp_path):
    log = _filled(tmp_path / "log")
    assert len(log.segments()) > 5  # the reads below cross segment boundaries
    _check_reads(log, 1500, random.Random(1))
    assert [r.lsn for r in log.read_from(1490)] == list(range(1490, 1501))
    log.close()
    reopened = TransactionLog(tmp_path / "log", DB_ID, segment_size=SEGMENT)
    reopened.open()
    _check_reads(reopened, 1500, random.Random(2))
    _write(reopened, 1501, 10)
    assert [r.lsn for r in reopened.read_from(1495)] == list(range(1495, 1511))
    reopened.close()


def test_records_written_and_forgotten_are_not_read(tmp_path):
    log = _filled(tmp_path / "log", total=100)
    lost = [Record(lsn, 1, 0, 3, b"never durable") for lsn in range(101, 111)]
    log.write([r.encode() for r in lost])
    log.forget_unsynced()  # as after a failed fdatasync
    _write(log, 101, 3)
    got = list(log.read_from(99))
    assert [r.lsn for r in got] == [99, 100, 101, 102, 103]
    assert b"never durable" not in b"".join(r.payload for r in got)
    log.close()


def test_a_read_that_passes_a_damaged_record_stops_there(tmp_path):
    log = _filled(tmp_path / "log", total=400)
    log.close()
    seg = next(s for s in log.segments() if s.first_lsn > 1)
    buf = seg.path.read_bytes()
    off, offsets = SEGMENT_HEADER_SIZE, {}
    while (dec := decode_record(buf, off)) is not None:
        offsets[dec[0].lsn] = off
        off = dec[1]
    victim = seg.first_lsn + (len(offsets) // 2)
    fd = os.open(seg.path, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff", offsets[victim] + 60)  # inside the payload
    finally:
        os.close(fd)
    again = TransactionLog(tmp_path / "log", DB_ID, segment_size=SEGMENT)
    with pytest.raises(LogCorruption) as e:
        again.open()  # the open scan checks every record
    assert e.value.lsn == victim and e.value.segment == seg.path.name
    # a log opened before the damage (its marks known) still finds it on a read across it
    live = _filled(tmp_path / "log2", total=400)
    seg2 = next(s for s in live.segments() if s.first_lsn == seg.first_lsn)
    fd = os.open(seg2.path, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff", offsets[victim] + 60)
    finally:
        os.close(fd)
    with pytest.raises(LogCorruption) as e:
        list(live.read_from(victim - 1, victim + 5))
    assert e.value.lsn == victim
    assert [r.lsn for r in live.read_from(victim - 3, victim - 1)] == [victim - 3, victim - 2, victim - 1]
    live.close()


def test_marks_stay_few_however_small_the_batches(tmp_path):
    log = TransactionLog(tmp_path / "log", DB_ID, segment_size=1024 * 1024)
    log.open()
    for lsn in range(1, 2001):
        _write(log, lsn, 1)  # one record per commit, as a lightly loaded node writes them
    marks = sum(len(lsns) for lsns, _ in log._marks.values())
    assert marks <= 2000 // 64 + len(log.segments())
    _check_reads(log, 2000, random.Random(3))
    log.close()


def test_a_batch_bigger_than_a_segment_that_fails_leaves_nothing_of_itself(tmp_path, monkeypatch):
    log = _filled(tmp_path / "log", total=50)
    segments_before = [s.path.name for s in log.segments()]
    big = [Record(lsn, 1, 0, 3, b"refused %d " % lsn * 100) for lsn in range(51, 251)]  # ~200 KiB: several segments
    real_sync = TransactionLog._sync

    def failing_sync(self):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(TransactionLog, "_sync", failing_sync)
    with pytest.raises(OSError):
        log.append([r.encode() for r in big], big[-1])
    monkeypatch.setattr(TransactionLog, "_sync", real_sync)
    assert [s.path.name for s in log.segments()] == segments_before  # the segments it started are gone
    assert log.last_lsn == 50
    _write(log, 51, 40)  # the same LSNs again, other records
    got = list(log.read_from(45))
    assert [r.lsn for r in got] == list(range(45, 91)) and all(r.payload == _payload(r.lsn) for r in got)
    log.close()
    reopened = TransactionLog(tmp_path / "log", DB_ID, segment_size=SEGMENT)
    reopened.open()  # the scan finds no trace of the refused batch
    assert reopened.last_lsn == 90
    assert [r.payload for r in reopened.read_from(51)] == [_payload(lsn) for lsn in range(51, 91)]
    reopened.close()


def test_a_segment_cut_short_outside_the_log_stops_a_read_with_the_lsn(tmp_path):
    log = _filled(tmp_path / "log", total=400)
    seg = log.segments()[1]
    os.truncate(seg.path, SEGMENT_HEADER_SIZE + 5000)  # what a bad copy or a broken disk leaves
    with pytest.raises(LogCorruption) as e:
        list(log.read_from(seg.first_lsn, 400))
    assert e.value.lsn is not None and e.value.lsn > seg.first_lsn
    log.close()


# ---------------------------------------------------------------- records of real mail sizes
BIG_SEGMENT = 4 * 1024 * 1024
BIG_SIZES = [64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 90_000, 300 * 1024, 1024 * 1024, 2 * 1024 * 1024 + 7]


def _big_payload(lsn: int, size: int) -> bytes:
    return (b"%d:" % lsn + bytes(random.Random(lsn).getrandbits(8) for _ in range(64)) * (size // 64 + 1))[:size]


def _big_log(path) -> tuple[TransactionLog, dict[int, bytes]]:
    """Records of mail sizes between small ones, some on mark positions (every 64th), written in
    batches of every shape, over several 4 MiB segments."""
    log = TransactionLog(path, DB_ID, segment_size=BIG_SEGMENT)
    log.open()
    rnd = random.Random(11)
    payloads: dict[int, bytes] = {}
    lsn = 1
    while lsn <= 400:
        batch = []
        for _ in range(rnd.choice([1, 3, 64, 70])):
            size = BIG_SIZES[lsn % len(BIG_SIZES)] if lsn % 9 == 0 or lsn % 64 in (0, 1) else 200 + lsn
            payloads[lsn] = _big_payload(lsn, size)
            batch.append(Record(lsn, 1, lsn, 3, payloads[lsn]))
            lsn += 1
        log.append([r.encode() for r in batch], batch[-1])
    return log, payloads


def test_records_of_any_mail_size_read_back_from_any_lsn(tmp_path):
    log, payloads = _big_log(tmp_path / "log")
    last = log.last_lsn
    assert len(log.segments()) > 1
    for reader in (log, None):
        if reader is None:  # and the same after a reopen, whose scan makes its own marks
            log.close()
            reader = TransactionLog(tmp_path / "log", DB_ID, segment_size=BIG_SEGMENT)
            reader.open()
            assert reader.last_lsn == last
        for start in range(1, last + 1, 3):
            upto = min(last, start + 5)
            got = list(reader.read_from(start, upto))
            assert [r.lsn for r in got] == list(range(start, upto + 1))
            assert all(r.payload == payloads[r.lsn] for r in got)
    reader.close()


def test_a_record_of_the_size_limit_fits_and_reads_back_from_its_mark(tmp_path):
    from mailpair.store.prepare import DEFAULT_MAX_MESSAGE

    log = TransactionLog(tmp_path / "log", DB_ID)
    log.open()
    small = [Record(lsn, 1, lsn, 3, b"x" * 300) for lsn in range(1, 64)]
    log.append([r.encode() for r in small], small[-1])
    # the limit's worth of message plus room for what a deliver record carries beside it
    huge = Record(64, 1, 64, 3, _big_payload(64, DEFAULT_MAX_MESSAGE + 256 * 1024))
    log.append([huge.encode()], huge)
    tail = Record(65, 1, 65, 3, b"after")
    log.append([tail.encode()], tail)
    for start in (60, 64, 65):
        got = list(log.read_from(start))
        assert [r.lsn for r in got] == list(range(start, 66))
    assert next(iter(log.read_from(64, 64))).payload == huge.payload
    log.close()


def _offsets(path) -> dict[int, int]:
    buf, off, out = path.read_bytes(), SEGMENT_HEADER_SIZE, {}
    while (dec := decode_record(buf, off)) is not None:
        out[dec[0].lsn] = off
        off = dec[1]
    return out


@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_damaged_large_record_is_damage_not_a_short_read(tmp_path, where):
    log, payloads = _big_log(tmp_path / "log")
    seg = log.segments()[0]
    offsets = _offsets(seg.path)
    victim = next(lsn for lsn in sorted(offsets) if len(payloads[lsn]) > 256 * 1024 and lsn + 1 in offsets)
    fd = os.open(seg.path, os.O_RDWR)
    try:
        if where == "payload":  # one byte deep inside, far past the first read window
            os.pwrite(fd, b"\xfe" if payloads[victim][200_000] != 0xFE else b"\xfd", offsets[victim] + 36 + 200_000)
        else:  # a length that runs past the segment's end
            os.pwrite(fd, (0x7FFFFFF0).to_bytes(4, "little"), offsets[victim] + 4)
    finally:
        os.close(fd)
    with pytest.raises(LogCorruption) as e:
        list(log.read_from(victim - 1, victim + 1))
    assert e.value.lsn == victim and e.value.segment == seg.path.name
    assert [r.lsn for r in log.read_from(victim - 2, victim - 1)] == [victim - 2, victim - 1]
    log.close()
    with pytest.raises(LogCorruption) as e:
        TransactionLog(tmp_path / "log", DB_ID, segment_size=BIG_SEGMENT).open()
    assert e.value.lsn == victim
