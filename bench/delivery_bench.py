"""Delivery benchmark: LMTP deliveries per second with p50/p99 latency, mailpair and Debian's
Dovecot (dovecot-lmtpd) side by side in one run, for what users run:

- servers: mailpair as a whole pair in sync mode and in async mode (both nodes on this machine,
  started with `mailpair pair up`: the passive stores and replays everything too), a single
  mailpair node with no passive, and Dovecot on Maildir, sdbox and mdbox;
- messages: 4 KiB ones at concurrency 1, 8 and 32, and the shared real-mail mix
  (mailpair/mailmix.py: mostly a few KiB to a few hundred KiB, a tail of attachments up to
  25 MiB) at concurrency 1 and 8.

Every server makes every message durable before the 250 (mailpair: fdatasync'd log with group
commit, on both nodes in sync mode; Dovecot: its default fsync policy, which fsyncs each delivery).
The client is one asyncio process with one persistent connection per concurrent sender; each
delivery is MAIL, RCPT, DATA (pipelined, as Postfix's LMTP client does) and the message, timed
from MAIL to the final reply. Sender k delivers to user k, so no server serialises on one mailbox.

    python bench/delivery_bench.py [--quick] [--seconds S] [--rounds N] [--only NAME,NAME]

Servers stay up and take turns level by level (and round by round), so load from elsewhere on a
shared machine falls on all of them rather than on whichever ran last.

The last line printed is JSON: "<server>_per_s", "<server>_p50_ms", "<server>_p99_ms" for each
server (keys "1", "8", "32" for 4 KiB, "mix1", "mix8" for the mix), "dovecot_best" (Dovecot's
fastest format at c32), and the headline "ratio_c32": the pair in sync mode over Dovecot's best
at concurrency 32; "single_ratio_c32" is the single node over Dovecot's best, "mix_ratio_c8"
the pair in sync mode over Dovecot's best for the mix at concurrency 8.
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
from mailpair import mailmix  # noqa: E402
from mailpair.config import NodeConfig  # noqa: E402
from mailpair.store import NodeStore  # noqa: E402

FAST_HASH = "$scrypt$ln=1,r=8,p=1$c2FsdA$eA"  # delivery never checks passwords
USERS = 32
LEVELS = (1, 8, 32)
MIX_LEVELS = (1, 8)
DOMAIN = "example.test"
DOVECOT_FORMATS = {"maildir": "maildir:~/Maildir", "sdbox": "sdbox:~/sdbox", "mdbox": "mdbox:~/mdbox"}


def _terminated(raw: bytes) -> bytes:
    """Dot-stuffed and ended with the lone dot, as LMTP's DATA wants it."""
    body = raw.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return body.rstrip(b"\r\n") + b"\r\n.\r\n"


def message(size: int = 4096) -> bytes:
    """A 4 KiB message, dot-stuffed (no line starts with a dot) and terminated for LMTP."""
    head = (
        f"From: Sender <sender@example.org>\r\nTo: user1@{DOMAIN}\r\nSubject: delivery bench\r\n"
        f"Message-ID: <bench@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2]
    return head + body.rstrip(b"\r\n") + b"\r\n" + b".\r\n"


def mix_payloads(n: int) -> list[bytes]:
    return [_terminated(mailmix.message(size, seed=i, to=f"user1@{DOMAIN}")) for i, size in enumerate(mailmix.sizes(n, seed=3))]


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


class MailpairPair:
    """A whole pair (`mailpair pair up`, both nodes on this machine) in sync or async mode."""

    def __init__(self, base: Path, mode: str):
        self.dir = base / f"pair-{mode}"
        self.mode = mode
        self.port = 0

    def _cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "mailpair", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"mailpair {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def __enter__(self) -> MailpairPair:
        info = json.loads(self._cli("pair", "up", "--dir", str(self.dir), "--users", str(USERS), "--mode", self.mode, "--json"))
        self.port = next(n for n in info["nodes"] if n["role"] == "active")["lmtp"]
        return self

    def __exit__(self, *exc: object) -> None:
        st = json.loads(self._cli("status", "--dir", str(self.dir), "--json"))
        copies = [(c["node"], c["status"], c["replayed_lsn"]) for d in st["databases"] for c in d["copies"]]
        print(f"pair {self.mode}: copies at the end {copies}", flush=True)
        self._cli("pair", "down", "--dir", str(self.dir))


# ---------------------------------------------------------------------------- client
async def sender(port: int, user: str, payloads: list[bytes], t_start: float, t_end: float, out: list, errors: list) -> None:
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
        k = int(user[4:]) * 7  # senders start at different places in the pool
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            writer.write(envelope)
            for expect in (b"250", b"250", b"354"):
                line = await reader.readline()
                if not line.startswith(expect):
                    raise RuntimeError(f"expected {expect!r}, got {line!r}")
            k += 1
            writer.write(payloads[k % len(payloads)])
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


async def run_level(port: int, concurrency: int, seconds: float, warmup: float, payloads: list[bytes]) -> dict:
    lat: list[float] = []
    errors: list[bytes] = []
    now = time.perf_counter()
    t_start, t_end = now + warmup, now + warmup + seconds
    await asyncio.gather(
        *(sender(port, f"user{k % USERS + 1}", payloads, t_start, t_end, lat, errors) for k in range(concurrency))
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


SERVERS = ["pair-sync", "pair-async", "mailpair", *(f"dovecot-{f}" for f in DOVECOT_FORMATS)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (about two minutes: six servers)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per level and round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of all levels (servers alternate within each)")
    ap.add_argument("--only", default=None, help=f"comma-separated servers among {', '.join(SERVERS)}")
    ap.add_argument("--dir", default=None, help="where the servers keep their data (default: a temporary directory)")
    args = ap.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 0.5 if args.quick else 1.0
    names = [n for n in SERVERS if args.only is None or n in args.only.split(",")]
    base = Path(tempfile.mkdtemp(prefix="mailpair-delivery-bench-", dir=args.dir))
    base.chmod(0o711)  # Dovecot's mail processes run as another user and must reach their directory
    kinds = {"": [message()], "mix": mix_payloads(40 if args.quick else 120)}
    mix_mean = sum(len(p) for p in kinds["mix"]) / len(kinds["mix"])
    plan = [("", c) for c in LEVELS] + [("mix", c) for c in MIX_LEVELS]
    print(f"delivery bench: 4 KiB messages and the real-mail mix (mean {mix_mean / 1024:.0f} KiB, largest "
          f"{max(map(len, kinds['mix'])) / 2**20:.1f} MiB) over LMTP, {rounds} round(s) of {seconds:.0f} s per level "
          f"after {warmup:.1f} s warm-up, servers alternating; {os.cpu_count()} CPUs, Python {platform.python_version()}",
          flush=True)  # fmt: skip
    runs: dict[str, dict[str, list]] = {n: {f"{k}{c}": [] for k, c in plan} for n in names}
    out: dict = {
        "message_bytes": 4096,
        "mix_mean_bytes": round(mix_mean),
        "seconds_per_level": seconds * rounds,
        "cpus": os.cpu_count(),
    }
    users = {f"user{i}": "bench" for i in range(1, USERS + 1)}
    servers: dict[str, object] = {}
    for name in names:
        if name == "mailpair":
            servers[name] = MailpairNode(base)
        elif name.startswith("pair-"):
            servers[name] = MailpairPair(base, name[5:])
        else:
            fmt = name.split("-", 1)[1]
            servers[name] = Dovecot(users=users, directory=base / name, mail_location=DOVECOT_FORMATS[fmt])
    started: list = []
    try:
        ports = {}
        for name, srv in servers.items():
            if isinstance(srv, Dovecot):
                ports[name] = srv.start().lmtp_port
            else:
                ports[name] = srv.__enter__().port
            started.append(srv)
        # Servers alternate level by level, so load from elsewhere on the machine falls on all.
        for rnd in range(rounds):
            for kind, c in plan:
                for name in names:
                    r = asyncio.run(run_level(ports[name], c, seconds, warmup, kinds[kind]))
                    runs[name][f"{kind}{c}"].append(r)
                    print(f"round {rnd + 1} {name:15} {kind or '4k':3} c={c:<3} {r['per_s']:8.0f}/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms", flush=True)  # fmt: skip
        print()
        for name in names:
            res = {c: combine(rs) for c, rs in runs[name].items()}
            for c, r in res.items():
                print(
                    f"{name:15} {c:5} {r['per_s']:8.0f}/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  ({r['n']} deliveries)"
                )
            out[f"{name}_per_s"] = {c: round(r["per_s"], 1) for c, r in res.items()}
            out[f"{name}_p50_ms"] = {c: round(r["p50_ms"], 3) for c, r in res.items()}
            out[f"{name}_p99_ms"] = {c: round(r["p99_ms"], 3) for c, r in res.items()}
        dovecots = [n for n in names if n.startswith("dovecot-")]
        if dovecots:
            best = max(dovecots, key=lambda n: out[f"{n}_per_s"]["32"])
            best_mix = max(dovecots, key=lambda n: out[f"{n}_per_s"]["mix8"])
            out["dovecot_best"] = best
            for ours, key, theirs, col in (
                ("pair-sync", "ratio_c32", best, "32"),
                ("mailpair", "single_ratio_c32", best, "32"),
                ("pair-sync", "mix_ratio_c8", best_mix, "mix8"),
                ("pair-sync", "ratio_c1", max(dovecots, key=lambda n: out[f"{n}_per_s"]["1"]), "1"),
            ):
                if ours in names:
                    out[key] = round(out[f"{ours}_per_s"][col] / out[f"{theirs}_per_s"][col], 3)
                    print(f"{ours} / {theirs} at {col}: {out[key]:.2f}x")
    finally:
        for srv in started:
            if isinstance(srv, Dovecot):
                srv.stop()
            else:
                srv.__exit__(None, None, None)
        if "mailpair" in servers and servers["mailpair"] in started:
            print(f"mailpair single node stored {servers['mailpair'].stored()} messages", flush=True)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
