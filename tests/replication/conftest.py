"""Fixtures of the replication tests: a two-process pair, a fault-injecting proxy, and a way to
damage a record on disk. Tests reach them only as fixtures (no helper imports, no sys.path edits).

The pair: the active is mailpair's Node run by the load driver (driver.py, a program the pair
starts, not a helper), the passive is `mailpair node run`. Both are real processes talking over
loopback; `pair up` creates their configuration, data and sample accounts. The proxy sits between
the passive and the active on its own thread and loop, and can flip bits in the bytes it forwards,
cut every open connection, and stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailpair.config import Listen, NodeConfig
from mailpair.store.log import SEGMENT_HEADER_SIZE, decode_record
from tests.helpers import pair as pairutil

ROOT = Path(__file__).resolve().parents[2]


class Pair:
    """Two node processes made by `pair up`, started and stopped by the test."""

    def __init__(self, root: Path, mode: str = "async", users: int = 3):
        self.root = Path(root)
        pairutil.pair_up(self.root, users=users, mode=mode)
        pairutil.pair_down(self.root)
        self.pair = json.loads((self.root / "pair.json").read_text())
        self.token = self.pair["admin_token"]
        self.active: subprocess.Popen | None = None
        self.passive: subprocess.Popen | None = None

    def config_path(self, name: str) -> Path:
        return self.root / name / "node.json"

    def config(self, name: str) -> NodeConfig:
        return NodeConfig.load(self.config_path(name))

    def data(self, name: str) -> Path:
        return self.root / name

    def set_passive_peer_port(self, port: int) -> None:
        """Point the passive at another port (a fault proxy in front of the active)."""
        cfg = self.config("node2")
        cfg.peer_replication = Listen(port=port)
        cfg.save(self.config_path("node2"))

    def set_secret(self, name: str, secret: str) -> None:
        cfg = self.config(name)
        cfg.secret = secret
        cfg.save(self.config_path(name))

    # ------------------------------------------------------------------ processes
    def start_active(self) -> None:
        self.active = subprocess.Popen(
            [sys.executable, "-m", "tests.replication.driver", "--config", str(self.config_path("node1"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.data("node1") / "node.log", "ab"),
            cwd=ROOT,
            text=True,
        )
        line = self.active.stdout.readline()
        assert line and json.loads(line)["ready"], f"active did not start: {line!r}"

    def cmd(self, **cmd: Any) -> dict:
        self.active.stdin.write(json.dumps(cmd) + "\n")
        self.active.stdin.flush()
        out = json.loads(self.active.stdout.readline())
        assert out.get("ok"), out
        return out

    def deliver_start(self, n: int, conc: int = 16, size: int = 1500) -> None:
        """Start a delivery run and return at once; deliver_result() waits for its answer."""
        self.active.stdin.write(json.dumps({"cmd": "deliver", "n": n, "conc": conc, "size": size}) + "\n")
        self.active.stdin.flush()

    def deliver_result(self) -> dict:
        out = json.loads(self.active.stdout.readline())
        assert out.get("ok"), out
        return out

    def shipper(self) -> list[dict]:
        return self.cmd(cmd="shipper")["copies"]

    def tune(self, name: str, **settings: Any) -> None:
        """DATA/replication.json: this node's replication tuning (read at start)."""
        (self.data(name) / "replication.json").write_text(json.dumps(settings))

    def deliver(self, n: int, conc: int = 16, size: int = 1500) -> dict:
        return self.cmd(cmd="deliver", n=n, conc=conc, size=size)

    def start_passive(self) -> None:
        self.passive = subprocess.Popen(
            [sys.executable, "-m", "mailpair", "node", "run", "--config", str(self.config_path("node2"))],
            stdout=open(self.data("node2") / "node.log", "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        self.wait(lambda: self.passive_copies() is not None, 30, "passive admin API")

    def kill_passive(self) -> None:
        self.passive.send_signal(signal.SIGKILL)
        self.passive.wait(10)
        (self.data("node2") / "node.state.json").unlink(missing_ok=True)

    def stop(self) -> None:
        for p in (self.passive, self.active):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.passive, self.active):
            if p is not None:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.active = self.passive = None

    # ------------------------------------------------------------------ observing
    def _status(self, name: str) -> dict | None:
        cfg = self.config(name)
        req = urllib.request.Request(f"http://{cfg.admin.host}:{cfg.admin.port}/api/status")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def passive_copies(self) -> list[dict] | None:
        st = self._status("node2")
        if st is None:
            return None
        return [c for d in st["databases"] for c in d["copies"]]

    def copy(self, db: str = "mail") -> dict | None:
        return next((c for c in self.passive_copies() or [] if c["database"] == db), None)

    def copy_action(self, action: str, db: str = "mail") -> None:
        cfg = self.config("node2")
        status, body = pairutil.http(
            f"http://{cfg.admin.host}:{cfg.admin.port}/api/databases/{db}/copy/{action}", self.token, method="POST", body={}
        )
        assert status == 200, body

    def wait(self, pred, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = pred()
            except (OSError, KeyError, TypeError):
                last = None
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; copy: {self.copy() if self.passive else None}")

    def wait_caught_up(self, lsn: int, timeout: float = 60) -> dict:
        def ok():
            c = self.copy()
            return c if c and c["status"] == "Healthy" and c["replayed_lsn"] == lsn and c["stored_lsn"] == lsn else None

        return self.wait(ok, timeout, f"copy Healthy and replayed to LSN {lsn}")

    def digests(self) -> tuple[dict, dict]:
        """`mailpair db digest DATA` of both nodes (run when both are stopped)."""
        out = []
        for name in ("node1", "node2"):
            r = pairutil.mailpair("db", "digest", str(self.data(name)))
            out.append({d["name"]: d for d in json.loads(r.stdout)["databases"]})
        return out[0], out[1]

    def log_text(self, name: str) -> str:
        return (self.data(name) / "node.log").read_text(errors="replace")


class FaultProxy:
    def __init__(self, upstream_port: int, seed: int = 7):
        self.upstream_port = upstream_port
        self.flip_every = 0  # flip one bit in about one of this many forwarded chunks (0: never)
        self.stalled_until = 0.0
        self.flips = 0
        self.cuts = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while time.monotonic() < self.stalled_until:
                    await asyncio.sleep(0.05)
                if self.flip_every and self._rng.randrange(self.flip_every) == 0:
                    buf = bytearray(data)
                    i = self._rng.randrange(len(buf))
                    buf[i] ^= 1 << self._rng.randrange(8)
                    data = bytes(buf)
                    self.flips += 1
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def cut(self) -> None:
        """Drop every open connection at once."""

        def do():
            for w in list(self._writers):
                w.transport.abort()
            self.cuts += 1

        self._loop.call_soon_threadsafe(do)

    def stall(self, seconds: float) -> None:
        self.stalled_until = time.monotonic() + seconds

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _flip_record(segment_dir, lsn_range) -> int:
    """Flip one bit in the payload of the first record in lsn_range; returns its LSN."""
    for seg in sorted(segment_dir.glob("*.log")):
        buf = bytearray(seg.read_bytes())
        off = SEGMENT_HEADER_SIZE
        while (dec := decode_record(buf, off)) is not None:
            rec, nxt = dec
            if rec.lsn in lsn_range:
                buf[off + 40] ^= 0x10
                with open(seg, "r+b") as f:
                    f.seek(off + 40)
                    f.write(bytes([buf[off + 40]]))
                return rec.lsn
            off = nxt
    raise AssertionError("no record in range")


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def cli():
    """The `mailpair` command line and a pair made with it, as a user would (pair up, status)."""
    return pairutil


@pytest.fixture
def make_pair(tmp_path) -> Iterator[Callable[..., Pair]]:
    """make_pair(mode="async", users=3): a configured pair under tmp_path, not started yet;
    every process it started is stopped after the test."""
    made: list[Pair] = []

    def make(mode: str = "async", users: int = 3) -> Pair:
        p = Pair(tmp_path / f"pair{len(made) or ''}", mode=mode, users=users)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def pair(make_pair) -> Pair:
    return make_pair()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[int], FaultProxy]]:
    """fault_proxy(upstream_port): a started proxy in front of that port, closed after the test."""
    made: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        made.append(FaultProxy(upstream_port).start())
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def flip_record() -> Callable[[Path, range], int]:
    """flip_record(segment_dir, lsn_range): damage one record on disk; returns its LSN."""
    return _flip_record
