r"""IMAP benchmark: mailpair next to Debian's Dovecot on the same machine, same messages, same
client.

Workloads, on a mailbox of N messages (10,000; --quick: 2,000):
- full_sync: a client's first sync: LOGIN, SELECT, UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE
  BODYSTRUCTURE), then 500 full bodies one command each (BODY.PEEK[]).
- resync: another session changes flags on 100 messages; the client comes back with
  ENABLE QRESYNC + SELECT (QRESYNC (uidvalidity highestmodseq)) and receives the 100 changes.
  Repeated for several rounds; messages/s counts changed messages delivered per second of resync.
- concurrent: 50 sessions reading at once (UID FETCH of 20 random messages, FLAGS ENVELOPE
  BODY.PEEK[], in a loop) for a fixed time.
- mixed: 10 clients living a mail client's day, over and over: connect, LOGIN (a returning
  user), SELECT, FETCH the newest envelopes, FETCH one body, STORE \Seen, APPEND (a synchronising
  literal written as imaplib writes it: the literal, then its CRLF, with TCP_NODELAY off),
  STORE \Deleted + UID EXPUNGE of what it appended, LOGOUT. Commands/s, LOGIN and APPEND p50/p99.
  Run twice: with the small messages above, and with messages from the real-mail mix
  (mailpair/mailmix.py: sizes shaped like a real mailbox's, up to --mix-max bytes). Dovecot's
  password is hashed at a cost comparable to mailpair's scrypt (SHA512-CRYPT, rounds calibrated
  on this machine) and its auth cache is on, as mailpair's is.
- lmtp reference: one client delivering one message at a time to mailpair over LMTP, the p50
  that mailpair's APPEND p50 under 10 clients is compared with (issue 16: within 2x).

mailpair runs in its own process (`--serve`), as Dovecot does, so the client's CPU is not charged
to either server. Both servers get a warm-up SELECT before timing (Dovecot builds its index then).

    python bench/imap_bench.py [--quick] [--messages N] [--seconds S]

Figures: messages/s, MB/s, p99 command latency per workload. The last line is JSON:
{"full_sync": {"mailpair", "dovecot", "ratio"}, "resync": {...}, "concurrent": {...},
 "mixed": {"ratio", "login_p50_ms", "append_p50_ms", ...}, "mixed_mix": {...}, "lmtp_p50_ms"}
with messages/s for each server and ratio = mailpair / dovecot (commands/s for the mixed runs;
login_p50_ms and append_p50_ms are mailpair's, Dovecot's beside them as dovecot_*).
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
import socket
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
        self.exists = 0  # the selected mailbox's size as the server last said it

    @classmethod
    async def connect(cls, port: int, login: bool = True) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        c = cls(r, w)
        await r.readline()
        if login:
            await c.cmd(f"LOGIN {USER} {PASSWORD}")
        return c

    def nagle(self) -> None:
        """Nagle on, as a client that never sets TCP_NODELAY has it (asyncio turns it off)."""
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)

    async def append(self, raw: bytes) -> list[bytes]:
        """APPEND with a synchronising literal, written as imaplib writes it: the command line,
        wait for "+", the literal, then the final CRLF in a write of its own."""
        self.n += 1
        tag = b"t%d" % self.n
        self.w.write(tag + b" APPEND INBOX {%d}\r\n" % len(raw))
        line = await self.r.readline()
        if not line.startswith(b"+"):
            raise RuntimeError(f"APPEND -> {line[:200]!r}")
        self.w.write(raw)
        await self.w.drain()
        self.w.write(b"\r\n")
        out = []
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            out.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"APPEND -> {line[:200]!r}")
                return out

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
            if line.endswith(b" EXISTS\r\n"):
                self.exists = int(line.split()[1])
            elif line.endswith(b" EXPUNGE\r\n"):
                self.exists -= 1
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


def p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] * 1000 if xs else 0.0


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


async def mixed(port: int, clients: int, seconds: float, messages: list[bytes]) -> dict:
    """Mail clients' days (see the module header); commands/s and LOGIN/APPEND latency."""
    logins: list[float] = []
    appends: list[float] = []
    commands = [0]
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def day(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop:
            c = await Client.connect(port, login=False)
            c.nagle()
            s = time.perf_counter()
            await c.cmd(f"LOGIN {USER} {PASSWORD}")
            logins.append(time.perf_counter() - s)
            await c.cmd("SELECT INBOX")
            await c.cmd(f"FETCH {max(1, c.exists - 9)}:{max(1, c.exists)} (FLAGS ENVELOPE)")
            await c.cmd(f"FETCH {rng.randint(1, max(1, c.exists))} BODY.PEEK[]")
            await c.cmd(f"STORE {rng.randint(1, max(1, c.exists))} +FLAGS (\\Seen)")
            raw = messages[rng.randrange(len(messages))]
            s = time.perf_counter()
            out = await c.append(raw)
            appends.append(time.perf_counter() - s)
            uid = out[-1].split(b"[APPENDUID ")[1].split(b"]")[0].split()[1].decode() if b"APPENDUID" in out[-1] else None
            if uid:
                await c.cmd(f"UID FETCH {uid} BODY.PEEK[]")
                await c.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
                await c.cmd(f"UID EXPUNGE {uid}")
            else:
                errors.append("no APPENDUID")
            await c.close()
            commands[0] += c.n

    t0 = time.perf_counter()
    await asyncio.gather(*(day(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    return {
        "commands_per_s": commands[0] / elapsed,
        "sessions": len(logins),
        "login_p50_ms": p50(logins),
        "login_p99_ms": p99(logins),
        "append_p50_ms": p50(appends),
        "append_p99_ms": p99(appends),
        "errors": len(errors),
    }


def lmtp_reference(port: int, n: int, raw: bytes) -> float:
    """p50 ms of one LMTP delivery at a time (one client, one recipient)."""
    import smtplib

    lat = []
    lmtp = smtplib.LMTP("127.0.0.1", port)
    lmtp.ehlo("bench")
    for _ in range(n):
        s = time.perf_counter()
        lmtp.sendmail("bench@example.org", [USER], raw)
        lat.append(time.perf_counter() - s)
    lmtp.quit()
    return p50(lat)


async def warm_up(port: int) -> None:
    c = await Client.connect(port)  # Dovecot builds its index here, mailpair warms its caches
    await c.cmd("SELECT INBOX")
    await c.cmd("UID FETCH 1:* (FLAGS)")
    await c.close()


def run_workload(name: str, port: int, args) -> dict:
    if name == "mixed":
        return asyncio.run(mixed(port, args.clients, args.seconds, args.small))
    if name == "mixed_mix":
        return asyncio.run(mixed(port, args.clients, args.seconds, args.mix))
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
        lmtp = None
        try:  # the LMTP reference for APPEND's latency; the bench runs on without it
            from mailpair.protocols import lmtp as lmtp_mod

            settings = lmtp_mod.DeliverySettings(host="127.0.0.1", port=0)
            lmtp = await lmtp_mod.start_lmtp(store, settings)
        except Exception as e:  # noqa: BLE001 - any failure only loses the reference figure
            print(f"  (no LMTP reference: {e})", file=sys.stderr, flush=True)
        print(srv.port, getattr(lmtp, "port", 0), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await srv.close()
        if lmtp is not None:
            await lmtp.close()
        await asyncio.to_thread(store.close)

    asyncio.run(main())


def populate_mailpair(data: Path, msgs: list[bytes]) -> None:
    from mailpair.store import NodeStore, hash_password, prepare_message

    store = NodeStore(data).open()
    db = store.default_database()
    # The default cost (scrypt 2**14), as real accounts have it: LOGIN is measured in the mixed run.
    db.commit("account_add", name=USER, hash=hash_password(PASSWORD))
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


MAILPAIR_LMTP = [0]  # the serving process's LMTP port, 0 when it has none


def scrypt_ms() -> float:
    """What one check of mailpair's password hash costs here (its default cost)."""
    from mailpair.store import hash_password, verify_password

    stored = hash_password("calibrate")
    runs = []
    for _ in range(3):
        s = time.perf_counter()
        verify_password("calibrate", stored)
        runs.append(time.perf_counter() - s)
    return min(runs) * 1000


def dovecot_password(target_ms: float) -> str:
    """A SHA512-CRYPT hash whose check costs about target_ms on this machine: the cost per round
    is the slope between two `doveadm pw` runs (process start-up cancels out)."""
    doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"

    def timed(rounds: int) -> tuple[float, str]:
        best, out = float("inf"), ""
        for _ in range(2):
            s = time.perf_counter()
            out = subprocess.run(
                [doveadm, "pw", "-s", "SHA512-CRYPT", "-r", str(rounds), "-p", PASSWORD],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            best = min(best, time.perf_counter() - s)
        return best * 1000, out

    low, _ = timed(1000)
    high, _ = timed(400_000)
    per_round = max((high - low) / 399_000, 1e-6)
    rounds = int(min(max(target_ms / per_round, 5000), 50_000_000))
    return timed(rounds)[1]


@contextlib.contextmanager
def mailpair_server(msgs: list[bytes]):
    tmp = Path(tempfile.mkdtemp(prefix="mailpair-imapbench-"))
    try:
        t0 = time.perf_counter()
        populate_mailpair(tmp / "data", msgs)
        print(f"  mailpair: {len(msgs)} messages stored in {time.perf_counter() - t0:.1f}s", flush=True)
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp / "data")], stdout=subprocess.PIPE, text=True)
        try:
            imap_port, lmtp_port = (int(x) for x in proc.stdout.readline().split())
            MAILPAIR_LMTP[0] = lmtp_port
            yield imap_port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def dovecot_server(msgs: list[bytes], plain: bool = False):
    try:
        from bench.peers.dovecot import Dovecot, available
    except ImportError:
        available = None
    if available is None or not available():
        print("  dovecot: not installed; mailpair figures only", flush=True)
        yield None
        return
    # A hashed password of comparable cost and Dovecot's auth cache on (as mailpair's is). Dovecot
    # 2.3's cache keeps the passdb's hash, so a cached login still verifies against it; its
    # workers do that in parallel. plain: the password in the clear (no hash at all), the other
    # reference.
    hashed = {} if plain else {USER: dovecot_password(scrypt_ms())}
    extra = (
        "protocol imap {\n  mail_max_userip_connections = 200\n}\n"
        "auth_cache_size = 10M\nauth_cache_ttl = 1 hour\nauth_cache_verify_password_with_worker = yes\n"
    )
    with Dovecot(users={USER: PASSWORD}, hashed=hashed, process_limit=400, extra_config=extra) as dc:
        populate_maildir(dc, msgs)
        yield dc.imap_port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 messages, short runs (about a minute)")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="duration of the concurrent workload")
    ap.add_argument("--clients", type=int, default=10, help="clients in the mixed runs")
    ap.add_argument("--mix-max", type=int, default=None, help="largest message of the real-mail mix (bytes)")
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
    from mailpair import mailmix

    args.small = [message(n + i) for i in range(200)]
    mix_max = args.mix_max or (2 * 1024 * 1024 if args.quick else 8 * 1024 * 1024)
    args.mix = list(mailmix.mix(60 if args.quick else 200, seed=16, to=f"{USER}@example.test", max_bytes=mix_max))
    print(f"IMAP benchmark: {n} messages of ~{sum(map(len, msgs)) // n} bytes, {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"  real-mail mix for APPEND: {len(args.mix)} messages, median {sorted(map(len, args.mix))[len(args.mix) // 2]} bytes, largest {max(map(len, args.mix))}"
    )
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
        for w in ("full_sync", "resync", "concurrent", "mixed", "mixed_mix"):
            for name in servers:
                results[name][w] = run_workload(w, ports[name], args)
                print(f"  {name} {w}: " + json.dumps({k: round(v, 2) for k, v in results[name][w].items()}), flush=True)
        lmtp_p50 = lmtp_reference(MAILPAIR_LMTP[0], 60, args.small[0]) if MAILPAIR_LMTP[0] else None
    plain: dict = {}
    if results["dovecot"] is not None:  # the mixed runs again against Dovecot with a clear-text password
        with dovecot_server(msgs, plain=True) as port:
            asyncio.run(warm_up(port))
            for w in ("mixed", "mixed_mix"):
                plain[w] = run_workload(w, port, args)
                print(
                    f"  dovecot (clear-text password) {w}: " + json.dumps({k: round(v, 2) for k, v in plain[w].items()}),
                    flush=True,
                )
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
    print(
        f"{'mixed run':<12} {'mp cmd/s':>9} {'dc cmd/s':>9} {'ratio':>6} {'mp LOGIN p50/p99':>17} {'dc LOGIN p50/p99':>17} {'mp APPEND p50/p99':>18} {'dc APPEND p50/p99':>18}"
    )
    for w in ("mixed", "mixed_mix"):
        mp = results["mailpair"][w]
        dc = results["dovecot"][w] if results["dovecot"] else None
        ratio = mp["commands_per_s"] / dc["commands_per_s"] if dc else None
        final[w] = {
            "ratio": round(ratio, 3) if ratio else None,
            "login_p50_ms": round(mp["login_p50_ms"], 2),
            "append_p50_ms": round(mp["append_p50_ms"], 2),
            "mailpair_commands_per_s": round(mp["commands_per_s"], 1),
            "dovecot_commands_per_s": round(dc["commands_per_s"], 1) if dc else None,
            "login_p99_ms": round(mp["login_p99_ms"], 2),
            "append_p99_ms": round(mp["append_p99_ms"], 2),
            "dovecot_login_p50_ms": round(dc["login_p50_ms"], 2) if dc else None,
            "dovecot_login_p99_ms": round(dc["login_p99_ms"], 2) if dc else None,
            "dovecot_append_p50_ms": round(dc["append_p50_ms"], 2) if dc else None,
            "dovecot_append_p99_ms": round(dc["append_p99_ms"], 2) if dc else None,
            "clients": args.clients,
        }
        if w in plain:
            final[w]["dovecot_plain_commands_per_s"] = round(plain[w]["commands_per_s"], 1)
            final[w]["ratio_plain"] = round(mp["commands_per_s"] / plain[w]["commands_per_s"], 3)
            final[w]["dovecot_plain_login_p50_ms"] = round(plain[w]["login_p50_ms"], 2)
            final[w]["dovecot_plain_append_p50_ms"] = round(plain[w]["append_p50_ms"], 2)
        nan = float("nan")
        print(
            f"{w:<12} {mp['commands_per_s']:>9.0f} {dc['commands_per_s'] if dc else nan:>9.0f} {ratio or nan:>6.2f} "
            f"{mp['login_p50_ms']:>8.1f}/{mp['login_p99_ms']:<8.1f} {dc['login_p50_ms'] if dc else nan:>8.1f}/{dc['login_p99_ms'] if dc else nan:<8.1f} "
            f"{mp['append_p50_ms']:>9.1f}/{mp['append_p99_ms']:<8.1f} {dc['append_p50_ms'] if dc else nan:>9.1f}/{dc['append_p99_ms'] if dc else nan:<8.1f}"
        )
    for w, r in plain.items():
        print(
            f"{w:<12} Dovecot with a clear-text password: {r['commands_per_s']:.0f} cmd/s (mailpair / that {final[w]['ratio_plain']:.2f}), LOGIN p50 {r['login_p50_ms']:.1f} ms, APPEND p50 {r['append_p50_ms']:.1f} ms"
        )
    final["lmtp_p50_ms"] = round(lmtp_p50, 2) if lmtp_p50 else None
    if lmtp_p50:
        print(
            f"one LMTP delivery at a time: p50 {lmtp_p50:.1f} ms; APPEND p50 with {args.clients} clients / that: {results['mailpair']['mixed']['append_p50_ms'] / lmtp_p50:.2f}"
        )
    print(json.dumps(final))


if __name__ == "__main__":
    main()
