"""Inspection: every received record is checked before it is stored (DESIGN rule 2).

Checks: the record's own checksum (the exact bytes the active wrote), that it belongs to this
database, that LSNs follow the copy's log without a gap or a repeat, and that the epoch never goes
back (the last two are store.continuity's one rule, which replay keeps too). A failure names the LSN; the caller asks the active again, never skips the record.
"""

from __future__ import annotations

from mailpair.store.apply import ReplayError
from mailpair.store.continuity import check_next
from mailpair.store.log import Record, decode_record


class InspectionFailed(Exception):
    def __init__(self, message: str, lsn: int):
        super().__init__(message)
        self.lsn = lsn


def inspect_batch(raws: list[bytes], expected_lsn: int, last_epoch: int, db_id: bytes, batch_db_id: bytes) -> list[Record]:
    """Decode and check a batch of raw records that must start at expected_lsn."""
    if batch_db_id != db_id:
        raise InspectionFailed("batch is for another database (database id differs)", expected_lsn)
    out: list[Record] = []
    lsn = expected_lsn
    epoch = last_epoch
    for raw in raws:
        if not isinstance(raw, bytes):
            raise InspectionFailed(f"record LSN {lsn} is not bytes", lsn)
        dec = decode_record(raw)
        if dec is None:
            raise InspectionFailed(f"record LSN {lsn} failed its checksum", lsn)
        rec, end = dec
        if end != len(raw):
            raise InspectionFailed(f"record LSN {lsn} has {len(raw) - end} stray bytes after it", lsn)
        try:
            check_next(rec.lsn, rec.epoch, lsn, epoch)  # the one continuity rule, as replay keeps it
        except ReplayError as e:
            raise InspectionFailed(str(e), lsn) from None
        epoch = rec.epoch
        out.append(rec)
        lsn += 1
    return out
