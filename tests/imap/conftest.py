"""Fixtures: a real store in a temporary directory and a real IMAP listener on loopback, run on
an asyncio loop in a background thread so blocking clients (imaplib, imapclient, mbsync) can talk
to it from the test."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailpair.protocols.imap import ImapSettings, start_imap
from mailpair.store import NodeStore, hash_password, prepare_message

PASSWORD = "secret-pw"


@dataclass
class Server:
    store: NodeStore
    loop: asyncio.AbstractEventLoop
    server: object
    host: str
    port: int
    settings: ImapSettings
    users: list[str] = field(default_factory=list)

    @property
    def db(self):
        return self.store.default_database()

    def deliver(self, user: str, raw: bytes, folder: str | None = None, flags=()) -> int:
        prepared = prepare_message(raw)
        res = self.db.commit("deliver", recipients=[(user, folder)], date=time.time_ns() // 1000, flags=list(flags), **prepared)
        kind, _box, uid = res["results"][0]
        assert kind == "ok", res
        return uid

    def add_user(self, name: str, quota: int = 0) -> None:
        self.db.commit("account_add", name=name, hash=hash_password(PASSWORD, log_n=8), quota=quota)
        self.users.append(name)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def message(n: int = 1, subject: str | None = None, body: str | None = None, to: str = "alice@example.test") -> bytes:
    subject = subject or f"message {n}"
    body = body or f"Hello number {n}.\r\nSecond line.\r\n"
    return (
        f"From: Bob Sender <bob@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:{n % 60:02d} +0000\r\nMessage-ID: <m{n}@example.test>\r\n\r\n{body}"
    ).encode()


def start_server(tmp: Path, **settings) -> tuple[Server, threading.Thread]:
    store = NodeStore(tmp / "data").open()
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    s = ImapSettings(host="127.0.0.1", port=0, login_delay=0.05, **settings)
    srv = asyncio.run_coroutine_threadsafe(start_imap(store, s), loop).result(10)
    return Server(store, loop, srv, "127.0.0.1", srv.port, s), t


def stop_server(server: Server, t: threading.Thread) -> None:
    server.call(server.server.close())
    server.loop.call_soon_threadsafe(server.loop.stop)
    t.join(10)
    server.loop.close()
    server.store.close()


@pytest.fixture
def imap(tmp_path):
    server, t = start_server(tmp_path)
    server.add_user("alice")
    server.add_user("bob")
    yield server
    stop_server(server, t)
