"""One address must not lock everyone out of IMAP (issue 17): 2,001 idle unauthenticated
connections from one address made everyone get BYE. Now: at most max_preauth_per_address
connections not yet logged in per address, pre-login time counted from the connection (a NOOP now
and then no longer keeps it), and a minimum data rate for a command being sent (a literal one
byte at a time no longer holds the connection for ever)."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.imap.conftest import PASSWORD, close_memory_host, make_memory_host, start_server, stop_server


def test_two_thousand_idle_connections_from_one_address_lock_nobody_else_out(tmp_path):
    """The attack as found, with the default limits, over memory transports (no sockets): 2,001
    idle connections from one address, then a client from another logs in."""
    m = make_memory_host(tmp_path)
    m.add_user("alice")

    async def go() -> None:
        from mailpair.protocols.imap.transport import MemoryTransport

        idle = []
        for _ in range(2001):
            tr = MemoryTransport(peer="192.0.2.1")
            idle.append((tr, asyncio.ensure_future(m.host.serve(tr))))
        greetings = [await tr.wait_for(b"* ") for tr, _ in idle]
        refused = [g for g in greetings if g.startswith(b"* BYE")]
        assert b"from your address" in refused[0]
        assert len(greetings) - len(refused) == m.host.settings.max_preauth_per_address
        other = m.client()
        other.t.peer = "198.51.100.7"
        greeting = await other.greeting()
        assert greeting.startswith(b"* OK"), greeting  # before: "* BYE ... too many connections"
        assert (await other.cmd(b"L LOGIN alice " + PASSWORD.encode()))[-1].startswith(b"L OK")
        await other.close()
        for tr, _ in idle:
            tr.send_eof()
        await asyncio.gather(*(task for _, task in idle))

    try:
        m.run(go(), timeout=120)
    finally:
        close_memory_host(m)


def _greeting(port: int, source: str) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    data = s.recv(4096)
    s.close()
    return data


def test_over_tcp_another_address_still_gets_in(tmp_path):
    """The same over real connections: 127.0.0.1 fills its share, 127.0.0.2 still logs in, and
    a client of 127.0.0.1 that logs in makes room for another of its address."""
    srv, t = start_server(tmp_path, max_connections=30)
    srv.add_user("alice")
    try:
        socks = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            socks.append((s, s.recv(4096)))
        assert sum(g.startswith(b"* OK") for _, g in socks) == srv.settings.max_preauth_per_address
        assert _greeting(srv.port, "127.0.0.2").startswith(b"* OK")  # before: BYE (30 of 30 taken)
        first = next(s for s, g in socks if g.startswith(b"* OK"))
        first.sendall(b"L LOGIN alice " + PASSWORD.encode() + b"\r\n")
        first.settimeout(10)
        assert b"L OK" in first.recv(4096)
        time.sleep(0.1)
        assert _greeting(srv.port, "127.0.0.1").startswith(b"* OK")
        for s, _ in socks:
            s.close()
    finally:
        stop_server(srv, t)


def test_pre_login_time_counts_from_the_connection(tmp_path):
    """A client that never logs in but sends NOOP more often than the pre-login timeout is
    closed once that time has passed since it connected; a logged-in one is not."""
    m = make_memory_host(tmp_path, preauth_timeout=0.6)
    m.add_user("alice")

    async def go() -> None:
        idle = m.client()
        await idle.greeting()
        user = m.client()
        await user.login()
        started = time.monotonic()
        closed_after = None
        for i in range(40):  # at most 4 s
            try:
                await idle.cmd(b"N%d NOOP" % i)
            except ConnectionError:
                closed_after = time.monotonic() - started
                break
            await asyncio.sleep(0.1)
        assert closed_after is not None, "a NOOP every 0.1 s kept an unauthenticated connection open"
        assert b"* BYE" in idle.t.received() or idle.t.closed
        assert (await user.cmd(b"U NOOP"))[-1].startswith(b"U OK")  # logged in: 30 minutes apply
        await user.close()
        await asyncio.wait_for(idle.task, 5)

    try:
        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)


def test_a_literal_sent_one_byte_at_a_time_is_cut_off(tmp_path):
    """A logged-in client sends an APPEND literal at a few bytes a second: before, each byte
    reset the 60 s command time-out and the connection stayed; now it must average
    min_data_rate past the grace."""
    m = make_memory_host(tmp_path, min_data_rate=100, data_rate_grace=0.5)
    m.add_user("alice")

    async def go() -> None:
        c = m.client()
        await c.login()
        c.t.send(b"A APPEND INBOX {5000}\r\n")
        await c.t.wait_for(b"+ ")
        started = time.monotonic()
        closed = False
        for _ in range(50):  # 2 bytes every 0.1 s, for at most 5 s
            if c.t.closed:
                closed = True
                break
            c.t.send(b"xx")
            await asyncio.sleep(0.1)
        assert closed, "a literal at 20 bytes/s was still being read after 5 s"
        assert time.monotonic() - started < 4
        assert b"* BYE" in c.t.received()
        await asyncio.wait_for(c.task, 5)
        # A client sending at a normal pace is not affected.
        fast = m.client()
        await fast.login()
        reply = await fast.append(b"B", b"INBOX", b"Subject: ok\r\n\r\n" + b"z" * 4000 + b"\r\n")
        assert reply[-1].startswith(b"B OK"), reply
        await fast.close()

    try:
        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)
