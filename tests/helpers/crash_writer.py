"""A writer process for the crash test: delivers messages from several threads and prints
"ACK n" (flushed) for each delivery the store acknowledged. The test kills it with SIGKILL.
Run from the repository root as `python -m tests.helpers.crash_writer DATA START THREADS`."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from mailpair.store import DatabaseConfig, NodeStore, prepare_message
from tests.helpers.store import FAST_HASH, message


def main() -> None:
    data, start, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = NodeStore(data, DatabaseConfig(segment_size=1024 * 1024)).open()
    db = store.default_database()
    try:
        db.commit("account_add", name="alice", hash=FAST_HASH, quota=0)
    except Exception:
        pass
    lock = threading.Lock()
    out = sys.stdout
    counter = iter(range(start, 10**9))

    def work() -> None:
        while True:
            with lock:
                n = next(counter)
            prepared = prepare_message(message(n, 2048))
            fut = db.submit("deliver", {"recipients": [("alice", None)], "date": time.time_ns() // 1000, **prepared})
            fut.result()
            with lock:
                out.write(f"ACK {n}\n")
                out.flush()

    out.write("READY\n")
    out.flush()
    for _ in range(threads):
        threading.Thread(target=work, daemon=True).start()
    time.sleep(3600)


if __name__ == "__main__":
    main()
