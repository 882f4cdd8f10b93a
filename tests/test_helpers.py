"""The shared test helpers keep their promises: a worker thread's failure fails the test."""

from __future__ import annotations

import time

import pytest

from tests.helpers.threads import run_workers


def test_a_failing_worker_fails_the_caller():
    def bad() -> None:
        assert 1 == 2, "inside a thread"

    with pytest.raises(AssertionError, match="worker-1 failed: AssertionError: inside a thread"):
        run_workers([lambda: None, bad], timeout=5)


def test_a_stuck_worker_fails_the_caller():
    with pytest.raises(AssertionError, match="still running"):
        run_workers([lambda: time.sleep(2)], timeout=0.1)


def test_workers_that_end_well_pass_and_during_runs_meanwhile():
    seen: list[str] = []
    run_workers([lambda: seen.append("worker")], timeout=5, during=lambda: seen.append("during"))
    assert sorted(seen) == ["during", "worker"]
