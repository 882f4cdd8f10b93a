"""Store benchmark: deliveries per second of 4 KiB messages at concurrency 1, 16 and 64, with
fsync on, next to the machine's own fsync rate (a plain write+fsync loop in the same directory),
so the ratio to the physical limit is visible.

Each delivery is the whole store path: parse the message once (ENVELOPE, BODYSTRUCTURE), decide,
append to the log with group commit (fdatasync), apply to SQLite, answer. The parse runs as a
node runs it: on the event loop, or in analysis helper processes where the node would start them
(one per core beyond two; --analysis-workers N sets how many, 0 for none).

    python bench/store_bench.py [--quick] [--dir DIR] [--analysis-workers N]

Then the same levels again with the messages analysed before the clock starts: the store's own
path, without the MIME analysis that shares the event loop with it. Then the shared real-mail mix
(mailpair/mailmix.py: a few KiB to a tail of attachments of several MiB) at concurrency 1 and 8,
with the analysis and without it ("mix_per_s", "mix_mib_per_s").

It also times the MIME analysis of one message alone (`analysis_us`): a figure of the machine's
single-core speed, so runs on different machines can be told apart (the same code has given
2,400 and 6,800 deliveries/s at concurrency 64 on two 2-core virtual machines of the same kind).

The last line printed is JSON: {"fsync_per_s", "deliveries_per_s": {"1", "16", "64"},
"store_only_per_s": {...}, "analysis_us", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mailpair import mailmix
from mailpair.store import DatabaseConfig, NodeStore, Preparer
from mailpair.store.prepare import default_workers, prepare_message

FAST_HASH = "$scrypt$ln=1,r=8,p=1$c2FsdA$eA"


def message(n: int, size: int = 4096, to: str = "user1@example.test") -> bytes:
    """A plain-text benchmark message of `size` bytes (the replication benchmark uses it too)."""
    head = (
        f"From: Sender <sender{n}@example.org>\r\nTo: {to}\r\nSubject: bench {n}\r\n"
        f"Message-ID: <b{n}@bench>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    return head + (line * (size // len(line) + 1))[: size - len(head)]


def analysis_us(rounds: int = 5, n: int = 2000) -> float:
    """Microseconds to analyse one 4 KiB benchmark message, best of a few rounds, nothing else running."""
    raw = message(1)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            prepare_message(raw)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def fsync_rate(directory: Path, seconds: float) -> float:
    """The physical limit: 4 KiB write + fdatasync, sequentially, in a preallocated file."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, 64 * 1024 * 1024)
        block = b"x" * 4096
        n, off = 0, 0
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            os.pwrite(fd, block, off)
            os.fdatasync(fd)
            off = (off + 4096) % (64 * 1024 * 1024)
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


async def deliveries(
    directory: Path, concurrency: int, seconds: float, workers: int, analysed_ahead: bool = False, mix: bool = False
) -> dict:
    """One level. analysed_ahead: the messages are analysed before the clock starts, so only the
    store's own path is timed (decide, log, group commit, apply, answer). mix: the shared
    real-mail mix instead of 4 KiB messages."""
    store = NodeStore(directory, DatabaseConfig()).open()
    preparer = await Preparer(workers).start()
    db = store.default_database()
    users = [f"user{i}" for i in range(1, 11)]
    for u in users:
        db.commit("account_add", name=u, hash=FAST_HASH, quota=0)
    raws = (
        [mailmix.message(size, seed=i) for i, size in enumerate(mailmix.sizes(120, seed=3))]
        if mix
        else [message(i) for i in range(256)]
    )
    ready = [await preparer.prepare(r) for r in raws] if analysed_ahead else None
    latencies: list[float] = []
    count = 0
    stop_at = 0.0

    async def worker(w: int) -> None:
        nonlocal count
        i = w
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            prepared = ready[i % len(ready)] if ready else await preparer.prepare(raws[i % len(raws)])
            await db.acommit("deliver", recipients=[(users[i % len(users)], None)], date=time.time_ns() // 1000, **prepared)
            latencies.append(time.perf_counter() - t)
            count += 1
            i += concurrency

    fsyncs0 = db.log.fsync_count
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    fsyncs = db.log.fsync_count - fsyncs0
    await preparer.close()
    store.close()
    latencies.sort()
    return {
        "per_s": count / elapsed,
        "deliveries": count,
        "fsyncs": fsyncs,
        "per_fsync": count / max(1, fsyncs),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "mean_ms": 1000 * statistics.fmean(latencies),
        "mib_per_s": count / elapsed * statistics.fmean(map(len, raws)) / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (about 20 s in all)")
    ap.add_argument("--dir", type=Path, help="where to put the databases (default: a temporary directory)")
    ap.add_argument(
        "--analysis-workers",
        type=int,
        default=default_workers(),
        help="analysis helper processes, as a node runs (0: in-process)",
    )
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 8.0
    base = Path(tempfile.mkdtemp(prefix="mailpair-bench-", dir=args.dir))
    try:
        fsync_per_s = fsync_rate(base, seconds / 2)
        print(f"machine fsync rate (4 KiB write + fdatasync): {fsync_per_s:,.0f}/s")
        cpu = analysis_us()
        print(f"machine speed: one 4 KiB message analysed in {cpu:.1f} us (one core, nothing else running)")
        print(f"message analysis: {args.analysis_workers or 'no'} helper process(es)")
        results = {}
        for c in (1, 16, 64):
            r = asyncio.run(deliveries(base / f"c{c}", c, seconds, args.analysis_workers))
            results[str(c)] = r
            print(
                f"concurrency {c:>2}: {r['per_s']:8,.0f} deliveries/s  {r['per_fsync']:5.1f} per fsync  "
                f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  ({r['per_s'] / fsync_per_s:.2f}x the fsync rate)"
            )
        store_only = {}
        for c in (1, 16, 64):
            r = asyncio.run(deliveries(base / f"s{c}", c, seconds, args.analysis_workers, analysed_ahead=True))
            store_only[str(c)] = r
            print(
                f"store only, messages analysed beforehand, concurrency {c:>2}: {r['per_s']:8,.0f} deliveries/s  {r['per_fsync']:5.1f} per fsync"
            )
        mix = {}
        for c, ahead in ((1, False), (8, False), (8, True)):
            r = asyncio.run(deliveries(base / f"m{c}{ahead}", c, seconds, args.analysis_workers, analysed_ahead=ahead, mix=True))
            mix[f"{'store_only_' if ahead else ''}{c}"] = r
            print(
                f"real-mail mix{' (store only)' if ahead else ''}, concurrency {c}: {r['per_s']:8,.0f} deliveries/s "
                f"({r['mib_per_s']:.1f} MiB/s)  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        json.dumps(
            {
                "fsync_per_s": round(fsync_per_s, 1),
                "deliveries_per_s": {c: round(r["per_s"], 1) for c, r in results.items()},
                "p99_ms": {c: round(r["p99_ms"], 2) for c, r in results.items()},
                "deliveries_per_fsync": {c: round(r["per_fsync"], 2) for c, r in results.items()},
                "store_only_per_s": {c: round(r["per_s"], 1) for c, r in store_only.items()},
                "message_bytes": 4096,
                "mix_per_s": {c: round(r["per_s"], 1) for c, r in mix.items()},
                "mix_mib_per_s": {c: round(r["mib_per_s"], 1) for c, r in mix.items()},
                "analysis_us": round(cpu, 2),
                "analysis_workers": args.analysis_workers,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
