"""Delivery benchmark: LMTP deliveries per second of 4 KiB messages at concurrency 1, 8 and 32,
with p50/p99 latency, for mailpair and for Debian's Dovecot (dovecot-lmtpd) side by side.

Both servers run as their own processes on loopback and make every message durable before the
250 (mailpair: fdatasync'd log with group commit; Dovecot: Maildir with its default fsync policy,
which fsyncs each delivered file). The client is one asyncio process with one persistent
connection per concurrent sender; each delivery is MAIL, RCPT, DATA (pipelined, as Postfix's LMTP
client does) and the message, timed from MAIL to the final reply. Sender k delivers to user k
(32 users), so neither server serialises on one mailbox.

    python bench/delivery_bench.py [--quick] [--seconds S] [--rounds N] [--only mailpair|dovecot]

Both servers stay up and take turns level by level (and round by round), so load from elsewhere on
a shared machine falls on both rather than on whichever ran second.

The last line printed is JSON: {"mailpair_per_s": {"1","8","32"}, "dovecot_per_s": {...},
"ratio_c32", "mailpair_p50_ms", "mailpair_p99_ms", "dovecot_p50_ms", "dovecot_p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers.dovecot import Dovecot  # noqa: E402
from mailpair.config import NodeConfig  # noqa: E402
from mailpair.store import NodeStore  # noqa: E402

FAST_HASH = "$scrypt$ln=1,r=8,p=1$c2FsdA$eA"  # delivery never checks passwords
USERS = 32
LEVELS = (1, 8, 32)
DOMAIN = "example.test"


def message(size: int = 4096) -> bytes:
    """A 4 KiB message, dot-stuffed (no line starts with a dot) and terminated for LMTP."""
    head = (
        f"From: Sender <sender@example.org>\r\nTo: user1@{DOMAIN}\r\nSubject: delivery bench\r\n"
        f"Message-ID: <bench@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2]
    return head + body.rstrip(b"\r\n") + b"\r\n" + b".\r\n"


# ---------------------------------------------------------------------------- servers
class MailpairNode:
    """A real node process (`mailpair node run`) with USERS accounts in a temporary directory."""

    def __init__(self, base: Path):
        self.data = base / "node"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> MailpairNode:
        store = NodeStore(self.data).open()
        db = store.default_database()
        for i in range(1, USERS + 1):
            db.commit("account_add", name=f"user{i}", hash=FAST_HASH, quota=0)
        store.close()
        cfg = NodeConfig(name="bench", data=str(self.data), domain=DOMAIN, admin_token="b" * 32)
        cfg.save(self.data / "node.json")
        self.err = open(self.data / "node.err", "wb")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailpair", "node", "run", "--config", str(self.data / "node.json")],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.port = json.loads((self.data / "node.state.json").read_text())["ports"]["lmtp"]
                return self
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                if self.proc.poll() is not None:
                    raise RuntimeError((self.data / "node.err").read_text()) from None
                time.sleep(0.05)
        raise RuntimeError("node did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()

    def stored(self) -> int:
        store = NodeStore(self.data).open()
        try:
            return store.default_database().read_sync(lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        finally:
            store.close()


# ---------------------------------------------------------------------------- client
async def sender(port: int, user: str, payload: bytes, t_start: float, t_end: float, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not (await reader.readline()).startswith(b"220"):
            raise RuntimeError("no greeting")
        writer.write(b"LHLO bench.example.org\r\n")
        while True:
            line = await reader.readline()
            if not line.startswith(b"250"):
                raise RuntimeError(f"LHLO: {line!r}")
            if line[3:4] == b" ":
                break
        envelope = f"MAIL FROM:<sender@example.org>\r\nRCPT TO:<{user}@{DOMAIN}>\r\nDATA\r\n".encode()
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            writer.write(envelope)
            for expect in (b"250", b"250", b"354"):
                line = await reader.readline()
                if not line.startswith(expect):
                    raise RuntimeError(f"expected {expect!r}, got {line!r}")
            writer.write(payload)
            line = await reader.readline()
            t1 = time.perf_counter()
            if not line.startswith(b"250"):
                errors.append(line)
                continue
            if t0 >= t_start:
                out.append(t1 - t0)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def run_level(port: int, concurrency: int, seconds: float, warmup: float) -> dict:
    payload = message()
    lat: list[float] = []
    errors: list[bytes] = []
    now = time.perf_counter()
    t_start, t_end = now + warmup, now + warmup + seconds
    await asyncio.gather(
        *(sender(port, f"user{k % USERS + 1}", payload, t_start, t_end, lat, errors) for k in range(concurrency))
    )
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries refused, first: {errors[0]!r}")
    return {"lat": lat, "seconds": seconds, **combine([{"lat": lat, "seconds": seconds}])}


def combine(runs: list[dict]) -> dict:
    lat = sorted(x for r in runs for x in r["lat"])
    seconds = sum(r["seconds"] for r in runs)
    n = len(lat)
    return {
        "per_s": n / seconds,
        "p50_ms": lat[n // 2] * 1000 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "n": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (about a minute)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per level and round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all levels (servers alternate within each)")
    ap.add_argument("--only", choices=["mailpair", "dovecot"], default=None)
    ap.add_argument("--dir", default=None, help="where the servers keep their data (default: a temporary directory)")
    args = ap.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 1.0
    base = Path(tempfile.mkdtemp(prefix="mailpair-delivery-bench-", dir=args.dir))
    base.chmod(0o711)  # Dovecot's mail processes run as another user and must reach their directory
    print(f"delivery bench: 4 KiB messages over LMTP, {rounds} round(s) of {seconds:.0f} s per level after "
          f"{warmup:.0f} s warm-up, servers alternating; {os.cpu_count()} CPUs, Python {platform.python_version()}",
          flush=True)  # fmt: skip
    names = [n for n in ("mailpair", "dovecot") if args.only in (None, n)]
    runs: dict[str, dict[str, list]] = {n: {str(c): [] for c in LEVELS} for n in names}
    out: dict = {"message_bytes": 4096, "seconds_per_level": seconds * rounds, "cpus": os.cpu_count()}
    users = {f"user{i}": "bench" for i in range(1, USERS + 1)}
    node = MailpairNode(base) if "mailpair" in names else None
    dc = Dovecot(users=users, directory=base / "dovecot") if "dovecot" in names else None
    try:
        ports = {}
        if node is not None:
            ports["mailpair"] = node.__enter__().port
        if dc is not None:
            ports["dovecot"] = dc.start().lmtp_port
        # Servers alternate level by level, so load from elsewhere on the machine falls on both.
        for rnd in range(rounds):
            for c in LEVELS:
                for name in names:
                    r = asyncio.run(run_level(ports[name], c, seconds, warmup))
                    runs[name][str(c)].append(r)
                    print(f"round {rnd + 1} {name:9} c={c:<3} {r['per_s']:8.0f}/s  p50 {r['p50_ms']:6.2f} ms  "
                          f"p99 {r['p99_ms']:6.2f} ms", flush=True)  # fmt: skip
        print()
        for name in names:
            res = {c: combine(rs) for c, rs in runs[name].items()}
            for c, r in res.items():
                print(
                    f"{name:9} c={c:<3} {r['per_s']:8.0f}/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  ({r['n']} deliveries)"
                )
            out[f"{name}_per_s"] = {c: round(r["per_s"], 1) for c, r in res.items()}
            out[f"{name}_p50_ms"] = {c: round(r["p50_ms"], 3) for c, r in res.items()}
            out[f"{name}_p99_ms"] = {c: round(r["p99_ms"], 3) for c, r in res.items()}
        if len(names) == 2:
            out["ratio_c32"] = round(out["mailpair_per_s"]["32"] / out["dovecot_per_s"]["32"], 3)
            print(f"mailpair / dovecot at concurrency 32: {out['ratio_c32']:.2f}x")
    finally:
        if node is not None:
            node.__exit__(None, None, None)
            measured = sum(r["n"] for rs in runs["mailpair"].values() for r in rs)
            print(f"mailpair stored {node.stored()} messages (measured {measured}, plus warm-up)", flush=True)
        if dc is not None:
            dc.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
