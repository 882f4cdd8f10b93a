"""Where a record may stand in a log: the one continuity check, used by every place that takes
records in order (the passive's inspection and store, replay on both nodes).

Rules this module keeps:
- A record's LSN is the one after the record before it: no gap, no repeat.
- A record's epoch is never older than the epoch before it (DESIGN rule 3: no record of an older
  epoch is applied after a newer one began).
- A break is a ReplayError naming the LSN (StaleEpoch for the epoch); callers that speak of
  inspection turn it into their own error with the same words.
"""

from __future__ import annotations

from mailpair.store.apply import ReplayError


class StaleEpoch(ReplayError):
    """A record from an older epoch than the one before it."""


def check_next(lsn: int, epoch: int, expected_lsn: int, last_epoch: int) -> None:
    """Raise unless a record (lsn, epoch) may follow where expected_lsn belongs after last_epoch."""
    if lsn != expected_lsn:
        raise ReplayError(f"record LSN {lsn} where LSN {expected_lsn} belongs (a gap or a repeat)")
    if epoch < last_epoch:
        raise StaleEpoch(f"record LSN {lsn} is from epoch {epoch}, older than epoch {last_epoch}")
