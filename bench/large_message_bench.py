"""Large-message benchmark: what one message at the size limit costs each node of a real pair.

A pair (sync mode, both nodes on this machine, started with `mailpair pair up`) takes one 25 MiB
multipart message from the shared real-mail mix over LMTP, then the same size over IMAP APPEND,
then a client FETCHes both whole and in partials (BODY[]<...>, BODY[2], BINARY[2]). Before each
stage the peak resident set of both node processes is reset (/proc/PID/clear_refs, 5), and after
the passive has stored and replayed everything the peak is read (VmHWM): the growth over the
resident set before the stage, in MiB and in multiples of the message's size, is what the stage
cost at its worst moment on each node (delivery, analysis, log, shipping, inspection, replay,
FETCH). Times are printed too.

    python bench/large_message_bench.py [--quick] [--size BYTES]

The last line is JSON: {"size", "stages": {stage: {"seconds", "active_peak_mib", "passive_peak_mib",
"active_x", "passive_x"}}, "max_x"}. --quick uses a smaller message (8 MiB) for a run of seconds.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import platform
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailpair import mailmix  # noqa: E402

MiB = 1024 * 1024


def mailpair(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mailpair", *args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"mailpair {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mib(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def peak_mib(pid: int) -> float:
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def wait_replayed(root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = json.loads(mailpair("status", "--dir", str(root), "--json"))
        copies = [c for db in st["databases"] for c in db["copies"]]
        if all(c["copy_queue"] == 0 and c["replay_queue"] == 0 and c["status"] in ("Healthy", "Mounted") for c in copies):
            if len({c["replayed_lsn"] for c in copies}) == 1:
                return
        time.sleep(0.2)
    raise SystemExit(f"the passive did not catch up: {st}")


def run(root: Path, size: int) -> dict:
    info = json.loads(mailpair("pair", "up", "--dir", str(root), "--users", "1", "--mode", "sync", "--json"))
    active = next(n for n in info["nodes"] if n["role"] == "active")
    passive = next(n for n in info["nodes"] if n["role"] == "passive")
    rcpt = f"user1@{info['domain']}"
    password = info["users"][0]["password"]
    stages: dict[str, dict] = {}

    def stage(name: str, fn) -> None:
        wait_replayed(root)
        base = {n["name"]: rss_mib(n["pid"]) for n in (active, passive)}
        for n in (active, passive):
            reset_peak(n["pid"])
        t = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t
        wait_replayed(root)
        out = {"seconds": round(seconds, 2)}
        for role, n in (("active", active), ("passive", passive)):
            grew = peak_mib(n["pid"]) - base[n["name"]]
            out[f"{role}_base_mib"] = round(base[n["name"]], 1)
            out[f"{role}_peak_mib"] = round(grew, 1)
            out[f"{role}_x"] = round(grew * MiB / size, 2)
        stages[name] = out
        print(f"{name:8} {seconds:6.2f} s   active +{out['active_peak_mib']:6.1f} MiB ({out['active_x']:.1f}x)   "
              f"passive +{out['passive_peak_mib']:6.1f} MiB ({out['passive_x']:.1f}x)", flush=True)  # fmt: skip

    msg = mailmix.message(size, seed=3, to=rcpt)

    def lmtp() -> None:
        with smtplib.LMTP("127.0.0.1", active["lmtp"], timeout=300) as c:
            c.sendmail("bench@example.org", [rcpt], msg)

    imap = imaplib.IMAP4("127.0.0.1", active["imap"])
    imap.login("user1", password)

    def append() -> None:
        typ, _ = imap.append("INBOX", None, None, mailmix.message(size, seed=4, to=rcpt))
        assert typ == "OK"

    def fetch() -> None:
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        got = [x[1] for x in data if isinstance(x, tuple) and len(x[1]) >= size]
        assert len(got) == 2, [len(x[1]) for x in data if isinstance(x, tuple)]
        imap.uid("FETCH", "1:*", "(BODY.PEEK[]<1000.5000000>)")
        imap.uid("FETCH", "1:*", "(BODY.PEEK[2] BINARY.PEEK[2] BODYSTRUCTURE)")

    try:
        stage("lmtp", lmtp)
        stage("append", append)
        stage("fetch", fetch)
        imap.logout()
    finally:
        mailpair("pair", "down", "--dir", str(root))
    return {
        "size": size,
        "stages": stages,
        "max_x": max(max(s["active_x"], s["passive_x"]) for s in stages.values()),
        "machine": f"{os.cpu_count()} cpu, {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="an 8 MiB message instead of 25 MiB")
    ap.add_argument("--size", type=int, help="message size in bytes (default: the 25 MiB limit)")
    args = ap.parse_args()
    size = args.size or (8 * MiB if args.quick else mailmix.DEFAULT_LIMIT)
    root = Path(tempfile.mkdtemp(prefix="mailpair-large-bench-"))
    try:
        result = run(root / "pair", size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
