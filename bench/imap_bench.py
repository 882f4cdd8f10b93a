"""IMAP benchmark: mailpair next to Debian's Dovecot on the same machine, same messages, same
client.

Workloads, on a mailbox of N messages (10,000; --quick: 2,000):
- full_sync: a client's first sync: LOGIN, SELECT, UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE
  BODYSTRUCTURE), then 500 full bodies one command each (BODY.PEEK[]).
- resync: another session changes flags on 100 messages; the client comes back with
  ENABLE QRESYNC + SELECT (QRESYNC (uidvalidity highestmodseq)) and receives the 100 changes.
  Repeated for several rounds; messages/s counts changed messages delivered per second of resync.
- concurrent: 50 sessions reading at once (UID FETCH of 20 random messages, FLAGS ENVELOPE
  BODY.PEEK[], in a loop) for a fixed time.

mailpair runs in its own process (`--serve`), as Dovecot does, so the client's CPU is not charged
to either server. Both servers get a warm-up SELECT before timing (Dovecot builds its index then).

    python bench/imap_bench.py [--quick] [--messages N] [--seconds S]

Figures: messages/s, MB/s, p99 command latency per workload. The last line is JSON:
{"full_sync": {"mailpair", "dovecot", "ratio"}, "resync": {...}, "concurrent": {...}, ...}
with messages/s for each server and ratio = mailpair / dovecot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "bench-pw"
USER = "user1"


# ---------------------------------------------------------------------------- messages
def message(n: int) -> bytes:
    """About 4 KiB; every fifth is multipart with an attachment, so BODYSTRUCTURE varies."""
    rnd = random.Random(n)
    head = (
        f"From: Sender {n % 97} <sender{n % 97}@example.org>\r\nTo: {USER}@example.test\r\n"
        f"Cc: list{n % 7}@lists.example.org\r\nSubject: benchmark message {n} about topic {rnd.randint(1, 500)}\r\n"
        f"Message-ID: <bench{n}@example.org>\r\nDate: Mon, 23 Nov 2026 10:{n % 60:02d}:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
    )
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    text = line * rnd.randint(20, 60)
    if n % 5:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()
    att = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n" * 20
    return (
        head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        '--b1\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; '
        'filename="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + att + "--b1--\r\n"
    ).encode()


# ---------------------------------------------------------------------------- a small fast client
class Client:
    """Just enough IMAP client: tagged commands, responses read with literals, byte counts."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.r, self.w = reader, writer
        self.n = 0
        self.bytes = 0

    @classmethod
    async def connect(cls, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        c = cls(r, w)
        await r.readline()
        await c.cmd(f"LOGIN {USER} {PASSWORD}")
        return c

    async def cmd(self, text: str) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        self.w.write(tag + b" " + text.encode() + b"\r\n")
        out = []
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            self.bytes += len(line)
            while line.endswith(b"}\r\n"):
                i = line.rfind(b"{")
                size = int(line[i + 1 : -3].rstrip(b"+"))
                lit = await self.r.readexactly(size)
                self.bytes += size
                line = line + lit + await self.r.readline()
            out.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]} -> {line[:200]!r}")
                return out

    async def close(self) -> None:
        try:
            await self.cmd("LOGOUT")
        except (ConnectionError, RuntimeError):
            pass
        self.w.close()


def count_fetch(lines: list[bytes]) -> int:
    return sum(1 for x in lines if x.startswith(b"* ") and b" FETCH (" in x[:30])


def p99(xs: list[float]) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


def select_info(lines: list[bytes]) -> tuple[int, int, list[int]]:
    uv = hms = 0
    for x in lines:
        if b"[UIDVALIDITY " in x:
            uv = int(x.split(b"[UIDVALIDITY ")[1].split(b"]")[0])
        if b"[HIGHESTMODSEQ " in x:
            hms = int(x.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0])
    return uv, hms, []


async def all_uids(c: Client) -> list[int]:
    lines = await c.cmd("UID SEARCH ALL")
    for x in lines:
        if x.startswith(b"* SEARCH"):
            return [int(u) for u in x.split()[2:]]
    return []


# ---------------------------------------------------------------------------- workloads
async def full_sync(port: int, bodies: int) -> dict:
    t0 = time.perf_counter()
    c = await Client.connect(port)
    await c.cmd("SELECT INBOX")
    lines = await c.cmd("UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    headers = count_fetch(lines)
    t_headers = time.perf_counter() - t0
    uids = await all_uids(c)
    lat = []
    for uid in uids[-bodies:]:
        s = time.perf_counter()
        await c.cmd(f"UID FETCH {uid} (BODY.PEEK[])")
        lat.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    total = headers + min(bodies, len(uids))
    nbytes = c.bytes
    await c.close()
    return {
        "messages_per_s": total / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "p99_ms": p99(lat),
        "header_sync_s": t_headers,
        "seconds": elapsed,
        "messages": total,
    }


async def resync(port: int, rounds: int, changes: int) -> dict:
    changer = await Client.connect(port)
    await changer.cmd("SELECT INBOX")
    uids = await all_uids(changer)
    c = await Client.connect(port)
    await c.cmd("ENABLE QRESYNC")
    uv, hms, _ = select_info(await c.cmd("SELECT INBOX"))
    await c.cmd("UNSELECT")
    rng = random.Random(7)
    total_time = 0.0
    got = 0
    nbytes = 0
    lat = []
    for r in range(rounds):
        for uid in rng.sample(uids, changes):
            await changer.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Flagged $round{r})")
        before = c.bytes
        s = time.perf_counter()
        lines = await c.cmd(f"SELECT INBOX (QRESYNC ({uv} {hms}))")
        el = time.perf_counter() - s
        lat.append(el)
        total_time += el
        nbytes += c.bytes - before
        got += count_fetch(lines)
        uv, hms, _ = select_info(lines)
        await c.cmd("UNSELECT")
    await c.close()
    await changer.close()
    return {
        "messages_per_s": got / total_time,
        "mb_per_s": nbytes / total_time / 1e6,
        "p99_ms": p99(lat),
        "changed_seen": got,
        "expected": rounds * changes,
    }


async def concurrent(port: int, sessions: int, seconds: float) -> dict:
    clients = [await Client.connect(port) for _ in range(sessions)]
    for c in clients:
        await c.cmd("EXAMINE INBOX")
    uids = await all_uids(clients[0])
    lat: list[float] = []
    counts = [0]
    stop = time.perf_counter() + seconds

    async def worker(c: Client, seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop:
            pick = ",".join(str(u) for u in sorted(rng.sample(uids, 20)))
            s = time.perf_counter()
            lines = await c.cmd(f"UID FETCH {pick} (FLAGS ENVELOPE BODY.PEEK[])")
            lat.append(time.perf_counter() - s)
            counts[0] += count_fetch(lines)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - t0
    nbytes = sum(c.bytes for c in clients)
    for c in clients:
        await c.close()
    return {"messages_per_s": counts[0] / elapsed, "mb_per_s": nbytes / elapsed / 1e6, "p99_ms": p99(lat), "sessions": sessions}


async def warm_up(port: int) -> None:
    c = await Client.connect(port)  # Dovecot builds its index here, mailpair warms its caches
    await c.cmd("SELECT INBOX")
    await c.cmd("UID FETCH 1:* (FLAGS)")
    await c.close()


def run_workload(name: str, port: int, args) -> dict:
    if name == "full_sync":
        return asyncio.run(full_sync(port, args.bodies))
    if name == "resync":
        return asyncio.run(resync(port, args.rounds, 100))
    return asyncio.run(concurrent(port, args.sessions, args.seconds))


# ---------------------------------------------------------------------------- servers
def serve(data: str) -> None:
    """Run mailpair's IMAP listener on an existing data directory (child process)."""
    from mailpair.protocols.imap import ImapSettings, start_imap
    from mailpair.store import NodeStore

    async def main() -> None:
        store = await asyncio.to_thread(lambda: NodeStore(Path(data)).open())
        srv = await start_imap(store, ImapSettings(host="127.0.0.1", port=0, max_connections_per_user=200))
        print(srv.port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await srv.close()
        await asyncio.to_thread(store.close)

    asyncio.run(main())


def populate_mailpair(data: Path, msgs: list[bytes]) -> None:
    from mailpair.store import NodeStore, hash_password, prepare_message

    store = NodeStore(data).open()
    db = store.default_database()
    db.commit("account_add", name=USER, hash=hash_password(PASSWORD, log_n=10))
    now = time.time_ns() // 1000
    futs = []
    for raw in msgs:
        futs.append(db.submit("deliver", {"recipients": [(USER, None)], "date": now, "flags": [], **prepare_message(raw)}))
        if len(futs) >= 256:
            for f in futs:
                f.result()
            futs = []
    for f in futs:
        f.result()
    store.close()


def populate_maildir(dc, msgs: list[bytes]) -> None:
    md = dc.maildir(USER)
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    for i, raw in enumerate(msgs):
        (md / "cur" / f"{now}.M{i}P1.bench,S={len(raw)}:2,").write_bytes(raw)
    uid, gid, _, _ = dc._accounts()
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(dc.dir / "home"):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid)


@contextlib.contextmanager
def mailpair_server(msgs: list[bytes]):
    tmp = Path(tempfile.mkdtemp(prefix="mailpair-imapbench-"))
    try:
        t0 = time.perf_counter()
        populate_mailpair(tmp / "data", msgs)
        print(f"  mailpair: {len(msgs)} messages stored in {time.perf_counter() - t0:.1f}s", flush=True)
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp / "data")], stdout=subprocess.PIPE, text=True)
        try:
            yield int(proc.stdout.readline())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def dovecot_server(msgs: list[bytes]):
    try:
        from bench.peers.dovecot import Dovecot, available
    except ImportError:
        available = None
    if available is None or not available():
        print("  dovecot: not installed; mailpair figures only", flush=True)
        yield None
        return
    extra = "protocol imap {\n  mail_max_userip_connections = 200\n}\n"
    with Dovecot(users={USER: PASSWORD}, process_limit=400, extra_config=extra) as dc:
        populate_maildir(dc, msgs)
        yield dc.imap_port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 messages, short runs (about a minute)")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="duration of the concurrent workload")
    ap.add_argument("--serve", metavar="DATA", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n = args.messages or (2000 if args.quick else 10_000)
    args.seconds = args.seconds or (5.0 if args.quick else 15.0)
    args.bodies = 500
    args.rounds = 3 if args.quick else 5
    args.sessions = 50
    msgs = [message(i) for i in range(n)]
    print(f"IMAP benchmark: {n} messages of ~{sum(map(len, msgs)) // n} bytes, {platform.machine()}, {os.cpu_count()} CPUs")
    results: dict = {"mailpair": {}, "dovecot": None}
    with contextlib.ExitStack() as stack:
        ports = {"mailpair": stack.enter_context(mailpair_server(msgs)), "dovecot": stack.enter_context(dovecot_server(msgs))}
        servers = [k for k, v in ports.items() if v is not None]
        if "dovecot" in servers:
            results["dovecot"] = {}
        for name in servers:
            asyncio.run(warm_up(ports[name]))
        # Workload by workload, both servers back to back, so load from elsewhere on the
        # machine falls on both alike.
        for w in ("full_sync", "resync", "concurrent"):
            for name in servers:
                results[name][w] = run_workload(w, ports[name], args)
                print(f"  {name} {w}: " + json.dumps({k: round(v, 2) for k, v in results[name][w].items()}), flush=True)
    print(
        f"{'workload':<12} {'mailpair msg/s':>15} {'dovecot msg/s':>14} {'ratio':>6} {'mp MB/s':>8} {'dc MB/s':>8} {'mp p99':>8} {'dc p99':>8}"
    )
    final: dict = {"messages": n}
    for w in ("full_sync", "resync", "concurrent"):
        mp = results["mailpair"][w]
        dc = results["dovecot"][w] if results["dovecot"] else None
        ratio = mp["messages_per_s"] / dc["messages_per_s"] if dc else None
        final[w] = {
            "mailpair": round(mp["messages_per_s"], 1),
            "dovecot": round(dc["messages_per_s"], 1) if dc else None,
            "ratio": round(ratio, 3) if ratio else None,
            "mailpair_mb_s": round(mp["mb_per_s"], 2),
            "dovecot_mb_s": round(dc["mb_per_s"], 2) if dc else None,
            "mailpair_p99_ms": round(mp["p99_ms"], 2),
            "dovecot_p99_ms": round(dc["p99_ms"], 2) if dc else None,
        }
        print(
            f"{w:<12} {mp['messages_per_s']:>15.0f} {dc['messages_per_s'] if dc else float('nan'):>14.0f} "
            f"{ratio or float('nan'):>6.2f} {mp['mb_per_s']:>8.1f} {dc['mb_per_s'] if dc else float('nan'):>8.1f} "
            f"{mp['p99_ms']:>8.1f} {dc['p99_ms'] if dc else float('nan'):>8.1f}"
        )
    print(json.dumps(final))


if __name__ == "__main__":
    main()
