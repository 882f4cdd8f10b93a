"""A two-process pair for replication tests: the active is mailpair's Node run by the load driver
(driver.py), the passive is `mailpair node run`. Both are real processes talking over loopback;
`pair up` creates their configuration, data and sample accounts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mailpair.config import Listen, NodeConfig
from tests import pairutil

ROOT = Path(__file__).resolve().parents[2]


class TestPair:
    __test__ = False  # not a test class

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
