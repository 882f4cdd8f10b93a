"""Replication's decisions as pure functions and tables: what status a copy shows, when the active
lets go of the log an absent copy holds, and how many records go into one frame.

Rules this module keeps:
- No I/O, no clock, no locks: every input is an argument, so each rule is tested with plain values
  (tests/replication/test_policy.py) and the shipper and receiver only gather the facts.
- A copy's status is one of DESIGN.md's words; the phase table below is the only place that maps
  a worker's phase to one.
- A pin is let go of only for a copy that is not here (no stream or seed being served or opening),
  and only when its log is gone already or, after a grace period, it alone holds too much.
- A batch never grows past what one frame may carry (codec.MAX_BATCH_BYTES).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from mailpair.replication.codec import MAX_BATCH_BYTES


class Phase(enum.Enum):
    """What a passive's copy worker is doing."""

    INIT = "init"  # not streaming yet (starting, just seeded, resumed)
    SEEDING = "seeding"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"  # stays until an admin resumes or reseeds


# The status each phase shows, before the checks that override it (see copy_status).
PHASE_STATUS: Mapping[Phase, str] = {
    Phase.INIT: "Initializing",
    Phase.SEEDING: "Seeding",
    Phase.DISCONNECTED: "Disconnected",
    Phase.FAILED: "Failed",
}


def copy_status(
    *,
    phase: Phase,
    reason: str | None,
    suspended: bool,
    replay_error: str | None,
    copy_queue: int | None,
    healthy_queue: int,
) -> tuple[str, str | None]:
    """The passive copy's status and its reason. In order: an admin's suspension, a failure of
    the stream, a failure of replay, the phase; a connected copy is Healthy within healthy_queue
    records of the active, else Resynchronizing."""
    if suspended:
        return "Suspended", "suspended by an administrator"
    if phase is Phase.FAILED:
        return "Failed", reason
    if replay_error:
        return "Failed", replay_error
    if phase in PHASE_STATUS:
        return PHASE_STATUS[phase], reason
    if copy_queue is not None and copy_queue <= healthy_queue:
        return "Healthy", None
    behind = f"catching up from the active's log files ({copy_queue} records behind)"
    return "Resynchronizing", f"{behind}; last failure: {reason}" if reason else behind


def active_view_status(streams: int, passive_says: str | None) -> str:
    """On the active: what the passive reports while it streams, Disconnected otherwise."""
    return (passive_says or "Disconnected") if streams else "Disconnected"


# ---------------------------------------------------------------------- the held log


def pin_may_be_released(*, present: bool, stale: bool, away_s: float, grace_s: float) -> bool:
    """Is the pin of this copy worth measuring for release? Never while the copy is here (a
    stream or seed is served or opening); at once when its pin is below the log's start (stale:
    it only stops truncation); otherwise only after grace_s away (a reconnect is no absence)."""
    if present:
        return False
    return stale or away_s >= grace_s


def release_pin(*, present: bool, stale: bool, checkpointed: bool, held_bytes: int, limit: int) -> bool:
    """The final word, taken where no pin or truncation can come in between: let go when the copy
    is still not here, something could be truncated at all (the state has a checkpoint pin), and
    the pin is stale or alone holds more than limit bytes."""
    if present or not checkpointed:
        return False
    return stale or held_bytes > limit


# ---------------------------------------------------------------------- batches


def batch_room(batch_bytes: int) -> int:
    """Bytes of records one batch may aim for: the setting, never more than a frame carries."""
    return max(1, min(batch_bytes, MAX_BATCH_BYTES))


def batch_takes(count: int, size: int, next_size: int, max_records: int, batch_bytes: int) -> bool:
    """May a batch of count records and size bytes take one more of next_size bytes? It fills up
    to batch_bytes (the last record may pass it, as one record is never split), but never past
    what one frame carries; an empty batch takes any record, as one record always fits a frame."""
    if count == 0:
        return True
    if count >= max_records or size >= batch_room(batch_bytes):
        return False
    return size + next_size <= MAX_BATCH_BYTES
