"""A delivery node for tests: a real store in a temporary directory with LMTP and SMTP listeners
on loopback, its event loop on a thread, so tests drive it with blocking real clients."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from mailpair.config import NodeConfig
from mailpair.protocols.delivery import DeliverySettings
from mailpair.protocols.lmtp import start_lmtp
from mailpair.protocols.smtp import start_smtp
from mailpair.store import NodeStore
from tests.helpers.store import FAST_HASH  # delivery never checks passwords

DOMAIN = "example.test"


class DeliveryNode:
    def __init__(self, data: Path, settings: DeliverySettings | None = None, users: tuple[str, ...] = ("alice", "bob")):
        self.data = Path(data)
        self.settings = settings or DeliverySettings(domain=DOMAIN, host="127.0.0.1", port=0)
        self.store = NodeStore(self.data).open()
        self.db = self.store.default_database()
        for u in users:
            self.db.commit("account_add", name=u, hash=FAST_HASH, quota=0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lmtp = self.call(start_lmtp(self.store, self.settings))
        self.smtp = self.call(start_smtp(self.store, replace(self.settings, unix_socket=None)))

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for server in (self.lmtp, self.smtp):
            self.call(server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.store.close()

    # ------------------------------------------------------------------ looking at the store
    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        def q(conn):
            rows = conn.execute(
                "SELECT b.raw FROM messages m JOIN mailboxes x ON x.id=m.mailbox_id JOIN blobs b ON b.id=m.blob_id "
                "WHERE x.account=? AND x.name=? ORDER BY m.uid",
                (user, folder),
            ).fetchall()
            return [bytes(r[0]) for r in rows]

        return self.db.read_sync(q)

    def count(self) -> int:
        return self.db.read_sync(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


def message(subject: str = "hello", body: str = "Hello there.\r\n", size: int = 0) -> bytes:
    head = (
        f"From: Sender <sender@example.org>\r\nTo: alice@{DOMAIN}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\n"
    )
    text = head + body
    if size > len(text):
        line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"
        text += (line * (size // len(line) + 1))[: size - len(text)]
    return text.encode()


class RawClient:
    """A line-level SMTP/LMTP client on a plain socket: sees every reply line as sent."""

    def __init__(self, port: int | None = None, path: str | None = None, timeout: float = 10):
        if path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def reply(self) -> list[str]:
        """One (possibly multi-line) reply."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text: str) -> list[str]:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def lmtp_session(port: int | None = None, path: str | None = None) -> RawClient:
    c = RawClient(port, path)
    assert c.reply()[0].startswith("220")
    assert c.cmd("LHLO client.test")[-1].startswith("250 ")
    return c


def stuff(raw: bytes) -> bytes:
    """Dot-stuff a CRLF message and add the terminator, as a client must."""
    lines = raw.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def start_node(data: Path, **config: object) -> tuple[subprocess.Popen, dict]:
    """A real `mailpair node run` process on data (alice and bob made first); its state file."""
    if not (data / "databases").exists():
        store = NodeStore(data).open()
        for u in ("alice", "bob"):
            store.default_database().commit("account_add", name=u, hash=FAST_HASH, quota=0)
        store.close()
    cfg = NodeConfig(name="n1", data=str(data), domain="example.test", admin_token="t" * 32, **config)
    cfg.save(data / "node.json")
    (data / "node.state.json").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "mailpair", "node", "run", "--config", str(data / "node.json")],
                            stdout=subprocess.DEVNULL, stderr=open(data / "node.err", "wb"))  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = json.loads((data / "node.state.json").read_text())
            if state.get("ports", {}).get("lmtp"):
                return proc, state
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert proc.poll() is None, (data / "node.err").read_text()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("node did not start: " + (data / "node.err").read_text())
