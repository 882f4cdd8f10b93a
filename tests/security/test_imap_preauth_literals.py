"""Literals before login (issue 17): `APPEND INBOX {20000000}` from a client that had not logged in
got "+ Ready", and the server read all 20 MB before saying "log in first" (six 24 MiB literals
raised a node's RSS from 202 to 330 MiB). Now, before login, a literal is refused without a
continuation unless its command may be sent then and it is small; a non-synchronising one that
is refused ends the connection instead of being read."""

from __future__ import annotations

import socket

from tests.imap.conftest import PASSWORD, start_server, stop_server


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert s.recv(4096).startswith(b"* OK")
    return s


def _until(s: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    buf = b""
    while marker not in buf:
        data = s.recv(65536)
        if not data:
            return buf + b"<closed>"
        buf += data
    return buf


def test_append_literal_before_login_gets_no_continuation(tmp_path):
    srv, t = start_server(tmp_path)
    srv.add_user("alice")
    try:
        s = _connect(srv.port)
        s.sendall(b"a1 APPEND INBOX {20000000}\r\n")
        out = _until(s, b"a1 ")
        assert not out.startswith(b"+"), out  # before: "+ Ready for literal data"
        assert out.startswith(b"a1 BAD") and b"log in first" in out, out
        # A literal a pre-login command may carry, but too big for one: refused the same way.
        s.sendall(b"a2 LOGIN {1000000}\r\n")
        out = _until(s, b"a2 ")
        assert out.startswith(b"a2 BAD") and b"before login" in out, out
        # Small literals still log in (a password with spaces or quotes needs one).
        s.sendall(b"a3 LOGIN {5}\r\n")
        assert _until(s, b"\r\n").startswith(b"+ ")
        s.sendall(b"alice {%d}\r\n" % len(PASSWORD))
        assert _until(s, b"\r\n").startswith(b"+ ")
        s.sendall(PASSWORD.encode() + b"\r\n")
        assert b"a3 OK" in _until(s, b"a3 ")
        # Once logged in, APPEND's literal is the message size limit's business again.
        s.sendall(b"a4 APPEND INBOX {11}\r\n")
        assert _until(s, b"\r\n").startswith(b"+ ")
        s.sendall(b"Subject: x\r\n\r\n")
        assert b"a4 OK" in _until(s, b"a4 ")
        s.close()
    finally:
        stop_server(srv, t)


def test_non_synchronising_literal_before_login_ends_the_connection(tmp_path):
    """Six 24 MiB LITERAL+ APPENDs on one connection, as found: the server closes the connection
    after the first command line instead of reading (and keeping) megabytes."""
    srv, t = start_server(tmp_path)
    try:
        s = _connect(srv.port)
        chunk = b"x" * (1024 * 1024)
        sent = 0
        try:
            for i in range(6):
                s.sendall(b"a%d APPEND INBOX {%d+}\r\n" % (i, 24 * 1024 * 1024))
                for _ in range(24):
                    s.sendall(chunk)
                    sent += len(chunk)
                s.sendall(b"\r\n")
            closed_early = False
        except (BrokenPipeError, ConnectionResetError):
            closed_early = True
        out = _until(s, b"* BYE") if not closed_early else b""
        assert closed_early or b"* BYE" in out, out[:200]
        assert sent < 6 * 24 * 1024 * 1024, "the server read every byte"
        s.close()
    finally:
        stop_server(srv, t)


def test_memory_stays_flat_under_pre_login_literals(tmp_path):
    """What unauthenticated clients announce is not allocated: the peak of Python allocations
    (the server runs in this process) stays far below one announced literal."""
    import tracemalloc

    srv, t = start_server(tmp_path)
    chunk = b"y" * 1_000_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(3):
            s = _connect(srv.port)
            s.sendall(b"a1 APPEND INBOX {25000000+}\r\n")
            try:
                for _ in range(25):
                    s.sendall(chunk)
                s.sendall(b"\r\n")
                _until(s, b"a1 ", 10)  # before the fix: "a1 BAD ... log in first", after 25 MB
            except (BrokenPipeError, ConnectionResetError):
                pass
            s.close()
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < 8_000_000, f"peak {peak} bytes"
    finally:
        tracemalloc.stop()
        stop_server(srv, t)


def test_framer_rules_before_and_after_login():
    """The sans-I/O reader itself: no Continue before login unless the command may be sent then
    and its literal is small; a refused non-synchronising literal asks for the connection's end."""
    from mailpair.protocols.imap import framing

    f = framing.Framer(64 * 1024, 25 * 1024 * 1024, preauth_literal_bytes=8192, preauth_commands=frozenset({"LOGIN"}))
    f.feed(b"a APPEND INBOX {20000000}\r\n")
    ev = f.next_event()
    assert isinstance(ev, framing.Refused) and not ev.close and ev.tag == b"a"
    f.feed(b"b LOGIN {9000}\r\n")
    ev = f.next_event()
    assert isinstance(ev, framing.Refused) and not ev.close
    f.feed(b"c LOGIN {5}\r\n")
    assert isinstance(f.next_event(), framing.Continue)
    f.feed(b"alice pw\r\n")
    assert isinstance(f.next_event(), framing.Command)
    f.feed(b"d APPEND INBOX {20000000+}\r\n")
    ev = f.next_event()
    assert isinstance(ev, framing.Refused) and ev.close
    f = framing.Framer(64 * 1024, 25 * 1024 * 1024, preauth_literal_bytes=8192, preauth_commands=frozenset({"LOGIN"}))
    f.authenticated = True
    f.feed(b"e APPEND INBOX {20000000}\r\n")
    assert isinstance(f.next_event(), framing.Continue)
