"""Epoch records and epoch history: where two logs part, found without reading them whole.

Every activation writes an epoch record as the first record of its epoch (CLUSTER.md: Epochs and
the log): `{epoch, start_lsn, previous_end: (e, E), node, uid_gap}`. Each node keeps the epoch
records of its log as its epoch history, like PostgreSQL's timeline history files. Pure data and
functions; the store writes and reads them (integration).

Rules this module keeps:
- Positions are `(epoch, lsn)` pairs and are compared as pairs, never as raw LSNs: two logs can
  hold different records at one LSN in different epochs.
- A history's epochs strictly grow, and so do their start LSNs; an epoch record never names a
  previous end at or after its own start. A record of a lower epoch than one seen is refused.
- Two logs share everything up to the divergence point: the lower of their two ends of the last
  epoch both hold. A rejoining node keeps its records up to the point and sets aside the rest
  (kept, listed, never replayed); the caller compares the record checksums at the point, and a
  mismatch there means the logs parted earlier than the histories say: reseed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

Position = tuple[int, int]  # (epoch, lsn)


class EpochHistoryError(ValueError):
    """Epoch records that cannot describe one log (out of order, overlapping, or disagreeing)."""


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    start_lsn: int  # the LSN of this epoch record: the epoch's first record
    previous_end: Position  # (e, E): the epoch this node continued from, and the last LSN of it kept
    node: str
    uid_gap: int = 0
    forced: str = ""  # activate --force: what the person accepted to lose, in words

    def __post_init__(self) -> None:
        pe, pl = self.previous_end
        if pe >= self.epoch:
            raise EpochHistoryError(f"epoch {self.epoch} cannot follow epoch {pe}")
        if pl >= self.start_lsn:
            raise EpochHistoryError(f"epoch {self.epoch} starts at LSN {self.start_lsn}, not after its previous end {pl}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> EpochRecord:
        raw = json.loads(text)
        raw["previous_end"] = tuple(raw["previous_end"])
        return cls(**raw)


class EpochHistory:
    """The epoch records of one node's log, in order."""

    def __init__(self, records: Iterable[EpochRecord] = ()) -> None:
        self.records: tuple[EpochRecord, ...] = ()
        for r in records:
            self.records = self.append(r).records

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last_epoch(self) -> int:
        return self.records[-1].epoch if self.records else 0

    def append(self, record: EpochRecord) -> EpochHistory:
        """The history with one more epoch; a record of an epoch not above the last is refused (rule 3)."""
        if self.records:
            last = self.records[-1]
            if record.epoch <= last.epoch:
                raise EpochHistoryError(f"epoch {record.epoch} after epoch {last.epoch}: an older epoch is refused")
            if record.start_lsn <= last.start_lsn:
                raise EpochHistoryError(f"epoch {record.epoch} starts at LSN {record.start_lsn}, inside epoch {last.epoch}")
        out = EpochHistory()
        out.records = (*self.records, record)
        return out

    def get(self, epoch: int) -> EpochRecord | None:
        for r in self.records:
            if r.epoch == epoch:
                return r
        return None

    def epoch_at(self, lsn: int) -> int:
        """The epoch of the record at lsn in this log (0 before the first epoch record)."""
        epoch = 0
        for r in self.records:
            if r.start_lsn > lsn:
                break
            epoch = r.epoch
        return epoch

    def position(self, lsn: int) -> Position:
        return (self.epoch_at(lsn), lsn)

    def end_of(self, epoch: int, log_end: int) -> int:
        """The last LSN of `epoch` in this log, whose last LSN is log_end."""
        for i, r in enumerate(self.records):
            if r.epoch == epoch:
                if i + 1 < len(self.records):
                    return self.records[i + 1].start_lsn - 1
                return log_end
        raise EpochHistoryError(f"epoch {epoch} is not in this log")


def divergence_point(mine: EpochHistory, my_end: int, theirs: EpochHistory, their_end: int) -> Position:
    """The last position both logs hold: the lower of their ends of the last epoch both have.

    (0, 0) when they share no epoch: nothing can be kept, the copy is reseeded.
    """
    shared = {r.epoch for r in mine} & {r.epoch for r in theirs}
    if not shared:
        return (0, 0)
    e = max(shared)
    a, b = mine.get(e), theirs.get(e)
    assert a is not None and b is not None
    if (a.start_lsn, a.node) != (b.start_lsn, b.node):
        raise EpochHistoryError(
            f"the two logs disagree on where epoch {e} began ({a.start_lsn} on {a.node}, {b.start_lsn} on {b.node})"
        )
    return (e, min(mine.end_of(e, my_end), theirs.end_of(e, their_end)))


def set_aside_range(mine: EpochHistory, my_end: int, point: Position) -> tuple[int, int] | None:
    """The LSNs (first, last) of this log that lie after the divergence point, or None."""
    first = point[1] + 1
    return (first, my_end) if first <= my_end else None


def needs_rebuild(applied: Position, point: Position) -> bool:
    """Whether a database applied past the point must be rebuilt (snapshot plus log, or reseed):
    replay cannot undo what it applied from records now set aside."""
    return applied > point
