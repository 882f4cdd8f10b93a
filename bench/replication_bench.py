"""Replication benchmark: copy lag, replay throughput, and delivery throughput in asynchronous
vs synchronous mode, with a real passive node process on loopback.

The active runs in this process (store + shipper, as a node does); the passive is
`mailpair node run` in its own process with its own data directory, pulling, inspecting,
storing (fsync) and replaying. Deliveries are 2 KiB messages at concurrency 64, the highest load
the active sustains (a closed loop: each worker delivers again as soon as it is answered), and
then the shared real-mail mix (mailpair/mailmix.py: a few KiB to a tail of attachments up to
25 MiB) at concurrency 8, in both modes, reported under "mix".

- copy lag: for every acknowledged batch, the time from "durable on the active" to "the passive
  says it is stored" (ms), and the copy queue in records sampled every 50 ms (async phase);
- replay: records/s the passive replays while catching up a backlog (copy suspended, N records
  delivered, resumed), and whether the replay queue grows under load;
- async_per_s / sync_per_s: deliveries/s in each mode (phases interleaved, several rounds, so
  load from other processes falls on both alike); sync_ratio = sync/async.

    python bench/replication_bench.py [--quick] [--dir DIR]

The last line is JSON: copy_lag_ms_p50, copy_lag_ms_p99, replay_per_s, async_per_s, sync_per_s,
sync_ratio (and a few more figures), and "mix": the same for the real-mail mix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from store_bench import FAST_HASH
from store_bench import message as store_message  # bench/ is on sys.path when run as a script

from mailpair import mailmix
from mailpair.config import Listen, NodeConfig
from mailpair.ports import free_port
from mailpair.replication import ReplicationSettings, start_shipper
from mailpair.replication.tls import issue_node_certificate
from mailpair.store import NodeStore, prepare_message

SECRET = "bench-secret"
TOKEN = "bench-token"


def message(n: int) -> bytes:
    return store_message(n, 2048, to=f"user{n % 8}@example.test")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Passive:
    def __init__(self, root: Path, repl_port: int):
        self.data = root / "node2"
        self.data.mkdir(parents=True)
        issue_node_certificate(root / "ca", self.data / "tls", "node2")  # replication runs over TLS, as in a pair
        self.admin = free_port()
        cfg = NodeConfig(
            name="node2",
            data=str(self.data),
            role="passive",
            admin=Listen(port=self.admin),
            replication=Listen(port=free_port()),
            peer_name="node1",
            peer_replication=Listen(port=repl_port),
            secret=SECRET,
            admin_token=TOKEN,
        )
        cfg.save(self.data / "node.json")
        (self.data / "replication.json").write_text(json.dumps({"reconnect_max_s": 0.5}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailpair", "node", "run", "--config", str(self.data / "node.json")],
            stdout=open(self.data / "node.log", "ab"),
            stderr=subprocess.STDOUT,
        )

    def _call(self, path: str, method: str = "GET") -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}{path}", method=method, data=b"{}" if method == "POST" else None
        )
        req.add_header("Authorization", f"Bearer {TOKEN}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def copy(self) -> dict | None:
        try:
            st = self._call("/api/status")
        except OSError:
            return None
        return next((c for d in st["databases"] for c in d["copies"] if c.get("database") == "mail"), None)

    def action(self, what: str) -> None:
        self._call(f"/api/databases/mail/copy/{what}", "POST")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def mix_pool(quick: bool) -> list[dict]:
    """The shared real-mail mix (a few KiB to the tail of large attachments), analysed once: the
    mix phases measure the pair's copy of large records, not the generator."""
    n = 60 if quick else 200
    return [prepare_message(mailmix.message(size, seed=i)) for i, size in enumerate(mailmix.sizes(n, seed=7))]


async def load(db, seconds: float, conc: int, counter: list[int], pool: list[dict] | None = None) -> float:
    """Closed-loop deliveries for `seconds` (2 KiB messages, or the mix's from pool); returns deliveries/s."""
    end = time.perf_counter() + seconds
    done = 0

    async def worker():
        nonlocal done
        while time.perf_counter() < end:
            counter[0] += 1
            n = counter[0]
            prepared = prepare_message(message(n)) if pool is None else pool[n % len(pool)]
            await db.acommit("deliver", recipients=[(f"user{n % 8}", None)], date=time.time_ns() // 1000, **prepared)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return done / (time.perf_counter() - t0)


async def run(root: Path, quick: bool) -> dict:
    seconds = 5.0 if quick else 15.0
    rounds = 2 if quick else 3
    backlog = 5000 if quick else 20000
    conc = 64
    store = NodeStore(root / "node1").open()
    db = store.default_database()
    for i in range(8):
        db.commit("account_add", name=f"user{i}", hash=FAST_HASH, quota=0)
    port = free_port()
    counter = [0]

    cert, key, ca = issue_node_certificate(root / "ca", root / "node1" / "tls", "node1")

    def settings(mode: str) -> ReplicationSettings:
        return ReplicationSettings(
            secret=SECRET.encode(), port=port, mode=mode, node="node1", sync_fallback_s=10.0,
            tls_cert=str(cert), tls_key=str(key), tls_ca=str(ca),
        )  # fmt: skip

    shipper = await start_shipper(store, settings("async"))
    passive = Passive(root, port)

    pool = mix_pool(quick)
    mix_conc = 8  # large messages arrive a few at a time, not 64 at once

    async def phase(mode: str, mix: bool = False) -> dict:
        """One timed run in one mode (the shipper restarted in it; the passive reconnects)."""
        nonlocal shipper
        await shipper.close()
        shipper = await start_shipper(store, settings(mode))
        await wait_for(lambda: (c := passive.copy()) and c["status"] == "Healthy", 60, "a Healthy copy")
        await wait_for(lambda: (s := shipper.status()) and s[0]["status"] == "Healthy", 30, "the shipper to see the copy")
        await load(db, 0.5, conc, counter)
        shipper.copies[("mail", "node2")].lag_samples.clear()
        queue: list[int] = []
        replay: list[int] = []
        sampling = True

        async def sample():
            while sampling:
                s = shipper.status()
                if s:
                    queue.append(s[0]["copy_queue"])
                    if s[0].get("replay_queue") is not None:
                        replay.append(s[0]["replay_queue"])
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        rate = await load(db, seconds, mix_conc if mix else conc, counter, pool if mix else None)
        sampling = False
        await sampler
        lags = list(shipper.lag_samples_ms("mail"))
        fallbacks = shipper.gates["mail"].fallbacks if mode == "sync" else 0
        head = db.log.last_lsn
        await wait_for(lambda: (c := passive.copy()) and c["replayed_lsn"] == head, 120, "catch-up after the phase")
        print(
            f"{mode + (' mix' if mix else ''):9}: {rate:7,.0f} deliveries/s at concurrency {mix_conc if mix else conc}; copy lag p50 {pct(lags, 50):6.1f} ms "
            f"p99 {pct(lags, 99):6.1f} ms ({len(lags)} acked batches); copy queue p50 {pct(queue, 50):.0f} "
            f"p99 {pct(queue, 99):.0f} records; replay queue max {max(replay, default=0)}; sync fallbacks {fallbacks}"
        )
        return {"rate": rate, "lags": lags, "queue": queue, "replay": replay, "fallbacks": fallbacks}

    try:
        await wait_for(lambda: (c := passive.copy()) and c["status"] == "Healthy", 60, "a Healthy copy")
        # async and sync phases interleaved, so load from other processes hits both alike
        results: dict[str, list[dict]] = {"async": [], "sync": []}
        for _ in range(rounds):
            for mode in ("async", "sync"):
                results[mode].append(await phase(mode))
        mixed: dict[str, list[dict]] = {"async": [], "sync": []}
        for _ in range(rounds):
            for mode in ("async", "sync"):
                mixed[mode].append(await phase(mode, mix=True))

        # replay: a backlog built while the copy is suspended (async shipper: nobody waits for
        # the suspended copy), then caught up
        await shipper.close()
        shipper = await start_shipper(store, settings("async"))
        passive.action("suspend")
        await wait_for(lambda: (c := passive.copy()) and c["status"] == "Suspended", 10, "Suspended")
        start_lsn = passive.copy()["replayed_lsn"]
        sem = asyncio.Semaphore(conc)

        async def one():
            async with sem:
                counter[0] += 1
                n = counter[0]
                await db.acommit(
                    "deliver", recipients=[(f"user{n % 8}", None)], date=time.time_ns() // 1000, **prepare_message(message(n))
                )

        await asyncio.gather(*(one() for _ in range(backlog)))
        head = db.log.last_lsn
        t0 = time.perf_counter()
        passive.action("resume")
        await wait_for(lambda: (c := passive.copy()) and c["replayed_lsn"] == head, 300, "backlog replayed")
        replay_rate = (head - start_lsn) / (time.perf_counter() - t0)
        print(
            f"catch-up of a {head - start_lsn}-record backlog (file mode, inspect, store, replay): {replay_rate:,.0f} records/s"
        )
    finally:
        await shipper.close()
        passive.stop()
        store.close()
    lags = [x for r in results["async"] for x in r["lags"]]
    sync_lags = [x for r in results["sync"] for x in r["lags"]]
    queue = [x for r in results["async"] for x in r["queue"]]
    async_rate = statistics.mean(r["rate"] for r in results["async"])
    sync_rate = statistics.mean(r["rate"] for r in results["sync"])
    mix_lags = [x for r in mixed["async"] for x in r["lags"]]
    mix_async = statistics.mean(r["rate"] for r in mixed["async"])
    mix_sync = statistics.mean(r["rate"] for r in mixed["sync"])
    mean_size = sum(len(p["raw"]) for p in pool) / len(pool)
    return {
        "mix": {
            "copy_lag_ms_p50": round(pct(mix_lags, 50), 2),
            "copy_lag_ms_p99": round(pct(mix_lags, 99), 2),
            "sync_copy_lag_ms_p99": round(pct([x for r in mixed["sync"] for x in r["lags"]], 99), 2),
            "async_per_s": round(mix_async, 1),
            "sync_per_s": round(mix_sync, 1),
            "sync_ratio": round(mix_sync / mix_async, 3),
            "async_mib_per_s": round(mix_async * mean_size / 2**20, 1),
            "mean_message_kib": round(mean_size / 1024, 1),
            "largest_message_mib": round(max(len(p["raw"]) for p in pool) / 2**20, 1),
            "concurrency": mix_conc,
        },
        "copy_lag_ms_p50": round(pct(lags, 50), 2),
        "copy_lag_ms_p99": round(pct(lags, 99), 2),
        "sync_copy_lag_ms_p50": round(pct(sync_lags, 50), 2),
        "copy_queue_records_p50": pct(queue, 50),
        "copy_queue_records_p99": pct(queue, 99),
        "replay_queue_max": max((x for r in results["async"] for x in r["replay"]), default=0),
        "replay_per_s": round(replay_rate, 1),
        "async_per_s": round(async_rate, 1),
        "sync_per_s": round(sync_rate, 1),
        "sync_ratio": round(sync_rate / async_rate, 3),
        "sync_fallbacks": sum(r["fallbacks"] for r in results["sync"]),
        "concurrency": conc,
        "rounds": rounds,
        "seconds_per_phase": seconds,
        "machine": f"{os.cpu_count()} cpu, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases (about a minute in all)")
    ap.add_argument("--dir", type=Path, help="where to put both nodes' data (default: a temporary directory)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailpair-repl-bench-", dir=args.dir))
    try:
        result = asyncio.run(run(root, args.quick))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
