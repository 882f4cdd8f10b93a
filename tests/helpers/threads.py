"""Worker threads for tests whose failures fail the test: an assert or an error inside a plain
threading.Thread only prints, and the test passes without it."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_workers(workers: list[Callable[[], None]], timeout: float, during: Callable[[], None] | None = None) -> None:
    """Run each worker on its own thread, call during() (if given) while they run, and wait up to
    timeout seconds for them to end. The first worker failure is raised here, with the others
    named; a worker still running at the deadline is a failure too."""
    failures: list[tuple[int, BaseException]] = []
    lock = threading.Lock()

    def wrap(k: int, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # collected for the test thread to raise
                with lock:
                    failures.append((k, e))

        return run

    threads = [threading.Thread(target=wrap(k, fn), name=f"worker-{k}", daemon=True) for k, fn in enumerate(workers)]
    for t in threads:
        t.start()
    try:
        if during is not None:
            during()
    finally:
        for t in threads:
            t.join(timeout)
    stuck = [t.name for t in threads if t.is_alive()]
    if failures:
        k, first = failures[0]
        others = ", ".join(f"worker-{j}: {type(e).__name__}: {e}" for j, e in failures[1:])
        raise AssertionError(
            f"worker-{k} failed: {type(first).__name__}: {first}" + (f" (also {others})" if others else "")
        ) from first
    assert not stuck, f"workers still running after {timeout}s: {stuck}"
