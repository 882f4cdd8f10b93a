"""Replication's decisions as plain values in, answers out: the copy status, the held-log release
rule and the batch size rule (the 34 MB two-process run in test_held_log.py shows the release
end to end; these show every branch)."""

from __future__ import annotations

import pytest

from mailpair.replication import codec, policy
from mailpair.replication.policy import Phase
from mailpair.store.log import RECORD_HEADER_SIZE, record_capacity

# the largest record the default log accepts, header and all
LARGEST = RECORD_HEADER_SIZE + record_capacity(codec.DEFAULT_SEGMENT_SIZE)

HEALTHY = 1000


def status(phase=Phase.CONNECTED, reason=None, suspended=False, replay_error=None, copy_queue=0):
    return policy.copy_status(
        phase=phase,
        reason=reason,
        suspended=suspended,
        replay_error=replay_error,
        copy_queue=copy_queue,
        healthy_queue=HEALTHY,
    )


@pytest.mark.parametrize(
    "phase, expected",
    [
        (Phase.INIT, "Initializing"),
        (Phase.SEEDING, "Seeding"),
        (Phase.DISCONNECTED, "Disconnected"),
        (Phase.FAILED, "Failed"),
    ],
)
def test_each_phase_shows_its_status_with_the_workers_reason(phase, expected):
    assert status(phase, reason="why") == (expected, "why")


def test_every_phase_but_connected_is_in_the_table():
    assert set(policy.PHASE_STATUS) == set(Phase) - {Phase.CONNECTED}


def test_a_connected_copy_is_healthy_within_the_queue_and_resynchronizing_beyond_it():
    assert status(copy_queue=0) == ("Healthy", None)
    assert status(copy_queue=HEALTHY) == ("Healthy", None)
    state, reason = status(copy_queue=HEALTHY + 1)
    assert state == "Resynchronizing" and f"{HEALTHY + 1} records behind" in reason
    assert status(copy_queue=None)[0] == "Resynchronizing"  # no head heard from the active yet


def test_suspension_comes_first_then_a_stream_failure_then_a_replay_failure():
    assert status(Phase.FAILED, "bad", suspended=True, replay_error="disk") == ("Suspended", "suspended by an administrator")
    assert status(Phase.FAILED, "bad", replay_error="disk") == ("Failed", "bad")
    for phase in (Phase.CONNECTED, Phase.SEEDING, Phase.DISCONNECTED, Phase.INIT):
        assert status(phase, "r", replay_error="disk full") == ("Failed", "disk full")


def test_the_active_shows_what_the_passive_says_only_while_it_streams():
    assert policy.active_view_status(1, "Healthy") == "Healthy"
    assert policy.active_view_status(2, None) == "Disconnected"
    assert policy.active_view_status(0, "Healthy") == "Disconnected"


# ---------------------------------------------------------------------- the held log


@pytest.mark.parametrize(
    "present, stale, away_s, expected",
    [
        (True, True, 10_000, False),  # a copy that is here (streaming, seeding, opening) keeps its pin
        (False, True, 0, True),  # a pin below the log's start: look at once
        (False, False, 299.9, False),  # away less than the grace: a reconnect, not an absence
        (False, False, 300, True),
    ],
)
def test_which_pins_are_worth_a_look(present, stale, away_s, expected):
    assert policy.pin_may_be_released(present=present, stale=stale, away_s=away_s, grace_s=300) is expected


@pytest.mark.parametrize(
    "present, stale, checkpointed, held, expected",
    [
        (False, False, True, 2048, True),  # alone holds more than the limit
        (False, False, True, 1024, False),  # exactly the limit is allowed
        (False, True, True, 0, True),  # stale: only stops truncation
        (True, True, True, 10**12, False),  # came back while we looked
        (False, True, False, 10**12, False),  # nothing could be truncated yet: keep it
    ],
)
def test_the_final_word_on_a_pin(present, stale, checkpointed, held, expected):
    got = policy.release_pin(present=present, stale=stale, checkpointed=checkpointed, held_bytes=held, limit=1024)
    assert got is expected


# ---------------------------------------------------------------------- batches


def _batch(sizes: list[int], max_records: int = 5000, batch_bytes: int = 4 * 1024 * 1024) -> list[list[int]]:
    """Cut a run of records of these sizes into batches as the shipper does."""
    out: list[list[int]] = []
    cur: list[int] = []
    for n in sizes:
        if not policy.batch_takes(len(cur), sum(cur), n, max_records, batch_bytes):
            out.append(cur)
            cur = []
        cur.append(n)
    return [*out, cur] if cur else out


def test_batches_fill_to_the_setting_and_pass_it_by_at_most_one_record():
    assert _batch([1000] * 10, batch_bytes=3000) == [[1000] * 3, [1000] * 3, [1000] * 3, [1000]]
    assert _batch([1000] * 5, max_records=2) == [[1000, 1000], [1000, 1000], [1000]]
    assert _batch([2000, 2000], batch_bytes=3000) == [[2000, 2000]]  # the one that crosses it goes too


def test_a_batch_never_exceeds_a_frame_even_with_a_huge_setting():
    big = LARGEST
    batches = _batch([big] * 7, batch_bytes=10**12)
    assert all(sum(b) <= codec.MAX_BATCH_BYTES for b in batches)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert policy.batch_room(10**12) == codec.MAX_BATCH_BYTES


def test_the_largest_record_goes_alone_after_a_full_batch():
    big = LARGEST
    batches = _batch([4 * 1024 * 1024 - 1, big, 10])
    assert batches == [[4 * 1024 * 1024 - 1, big], [10]]  # a batch just under 4 MiB takes it: still a frame
    assert sum(batches[0]) <= codec.MAX_BATCH_BYTES


def test_a_copy_catching_up_after_a_failure_still_says_why():
    from mailpair.replication.policy import Phase, copy_status

    status, reason = copy_status(
        phase=Phase.CONNECTED,
        reason="LogFull: no space left",
        suspended=False,
        replay_error=None,
        copy_queue=5000,
        healthy_queue=1000,
    )
    assert status == "Resynchronizing" and "5000 records behind" in reason and "no space left" in reason
    status, reason = copy_status(
        phase=Phase.CONNECTED, reason=None, suspended=False, replay_error=None, copy_queue=5000, healthy_queue=1000
    )
    assert status == "Resynchronizing" and "last failure" not in reason
