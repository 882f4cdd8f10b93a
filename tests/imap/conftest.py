"""Fixtures: a real store in a temporary directory and a real IMAP listener on loopback, run on
an asyncio loop in a background thread so blocking clients (imaplib, imapclient, mbsync) can talk
to it from the test."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
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
    s = ImapSettings(**{"host": "127.0.0.1", "port": 0, "login_delay": 0.05, **settings})
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


# ---------------------------------------------------------------------------- sessions without a socket
class MemoryClient:
    """A client of an ImapHost over a MemoryTransport: whole IMAP sessions, no network."""

    def __init__(self, host):
        from mailpair.protocols.imap.transport import MemoryTransport

        self.t = MemoryTransport(peer="192.0.2.1")
        self.task = asyncio.ensure_future(host.serve(self.t))

    async def greeting(self) -> bytes:
        return await self.t.wait_for(b"* ")

    async def cmd(self, text: bytes) -> list[bytes]:
        """Send one command line; the response lines up to and including the tagged one."""
        tag = text.split(b" ", 1)[0]
        self.t.send(text + b"\r\n")
        return (await self.t.wait_for(tag + b" ")).split(b"\r\n")[:-1]

    async def append(self, tag: bytes, mailbox: bytes, raw: bytes, literal8: bool = False) -> list[bytes]:
        """APPEND with a synchronising literal: waits for the continuation like a real client."""
        self.t.send(tag + b" APPEND " + mailbox + (b" ~{%d}\r\n" if literal8 else b" {%d}\r\n") % len(raw))
        await self.t.wait_for(b"+ ")
        self.t.send(raw + b"\r\n")
        return (await self.t.wait_for(tag + b" ")).split(b"\r\n")[:-1]

    async def login(self, user: str = "alice") -> None:
        await self.greeting()
        assert (await self.cmd(b"L LOGIN " + user.encode() + b" " + PASSWORD.encode()))[-1].startswith(b"L OK")

    async def close(self) -> None:
        self.t.send_eof()
        await asyncio.wait_for(self.task, 10)


@dataclass
class MemoryHost:
    """A store and an ImapHost on an event loop of the test's own (not running in a thread: each
    `run` drives it), so sessions run over memory transports with no socket anywhere."""

    store: NodeStore
    host: object
    loop: asyncio.AbstractEventLoop

    @property
    def db(self):
        return self.store.default_database()

    def run(self, coro, timeout: float = 30):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def client(self) -> MemoryClient:
        return MemoryClient(self.host)

    def deliver(self, user: str, raw: bytes, folder: str | None = None, flags=()) -> int:
        prepared = prepare_message(raw)
        res = self.db.commit("deliver", recipients=[(user, folder)], date=time.time_ns() // 1000, flags=list(flags), **prepared)
        return res["results"][0][2]

    def add_user(self, name: str) -> None:
        self.db.commit("account_add", name=name, hash=hash_password(PASSWORD, log_n=8), quota=0)


def make_memory_host(tmp: Path, **settings) -> MemoryHost:
    from mailpair.protocols.imap.host import ImapHost

    store = NodeStore(tmp / "data").open()
    loop = asyncio.new_event_loop()
    host = ImapHost(store, ImapSettings(**{"host": "127.0.0.1", "port": 0, "login_delay": 0.05, **settings}))
    return MemoryHost(store, host, loop)


def close_memory_host(m: MemoryHost) -> None:
    m.run(m.host.close_sessions())
    m.loop.close()
    m.store.close()


class SocketMade(AssertionError):
    pass


@contextmanager
def sockets_forbidden():
    """Any socket.socket created inside raises (and is recorded): the proof that a test ran
    without a network. Sockets that already exist (the event loop's self-pipe) are untouched."""
    made: list = []

    def refuse(self, *args, **kwargs):
        made.append(args)
        raise SocketMade("a socket was opened in a test that must run without one")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "__init__", refuse)
        yield made


@pytest.fixture
def memory_host(tmp_path):
    m = make_memory_host(tmp_path)
    m.add_user("alice")
    m.add_user("bob")
    with sockets_forbidden() as made:
        yield m
        close_memory_host(m)
    assert not made
