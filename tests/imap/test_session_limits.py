"""Session life: time-outs, BYE when the server closes, \\Recent, per-session state."""

from __future__ import annotations

import imaplib
import socket
import time

from .conftest import PASSWORD, message, start_server, stop_server


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return out
            out += data
    except TimeoutError:
        return out + b"<still open>"


def test_idle_timeout_and_command_timeout_close_with_bye(tmp_path):
    srv, t = start_server(tmp_path, idle_timeout=0.5, preauth_timeout=0.5, command_timeout=0.5)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port))
        out = _read_all(s, 3)
        assert out.startswith(b"* OK") and b"* BYE" in out and not out.endswith(b"<still open>")
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"a1 LOGIN {5}\r\n")  # starts a command and never finishes it
        out = _read_all(s, 3)
        assert b"+ " in out and not out.endswith(b"<still open>")
    finally:
        stop_server(srv, t)


def test_server_close_says_bye_to_sessions(tmp_path):
    srv, t = start_server(tmp_path)
    srv.add_user("alice")
    c = imaplib.IMAP4("127.0.0.1", srv.port)
    c.login("alice", PASSWORD)
    c.select("INBOX")
    srv.call(srv.server.close())
    c.sock.settimeout(5)
    data = c.sock.recv(1000)
    assert data.startswith(b"* BYE")
    srv.loop.call_soon_threadsafe(srv.loop.stop)
    t.join(10)
    srv.loop.close()
    srv.store.close()


def test_recent_goes_to_one_session_only(imap):
    a = imaplib.IMAP4("127.0.0.1", imap.port)
    a.login("alice", PASSWORD)
    b = imaplib.IMAP4("127.0.0.1", imap.port)
    b.login("alice", PASSWORD)
    a.select("INBOX")
    b.select("INBOX")
    imap.deliver("alice", message(1))
    time.sleep(0.1)
    a.noop()
    assert a.response("RECENT")[1][-1] == b"1"
    assert b"\\Recent" in a.fetch("1", "(FLAGS)")[1][0]
    b.noop()
    assert b.response("RECENT")[1][-1] == b"0"
    assert b"\\Recent" not in b.fetch("1", "(FLAGS)")[1][0]
    a.logout()
    b.logout()


def test_compress_deflate(imap):
    import zlib

    imap.deliver("alice", message(1))
    s = socket.create_connection(("127.0.0.1", imap.port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n")
    while not f.readline().startswith(b"a OK"):
        pass
    s.sendall(b"b COMPRESS DEFLATE\r\n")
    assert f.readline().startswith(b"b OK")
    comp, decomp = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    s.sendall(comp.compress(b"c SELECT INBOX\r\nd FETCH 1 (BODY.PEEK[])\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
    got = b""
    while b"d OK" not in got:
        got += decomp.decompress(s.recv(65536))
    assert b"c OK [READ-WRITE]" in got and message(1) in got
    s.sendall(comp.compress(b"e COMPRESS DEFLATE\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
    while b"e NO" not in got:
        got += decomp.decompress(s.recv(65536))
    assert b"e NO [COMPRESSIONACTIVE]" in got
    s.close()


def test_authenticate_sasl_ir_and_cancel(imap):
    import base64

    s = socket.create_connection(("127.0.0.1", imap.port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a AUTHENTICATE PLAIN *\r\n")  # not base64
    assert f.readline().startswith(b"a BAD")
    s.sendall(b"b AUTHENTICATE PLAIN\r\n")
    assert f.readline().startswith(b"+")
    s.sendall(b"*\r\n")  # the client cancels
    assert f.readline().startswith(b"b BAD")
    s.sendall(b"c AUTHENTICATE PLAIN " + base64.b64encode(b"bob\0alice\0" + PASSWORD.encode()) + b"\r\n")
    assert f.readline().startswith(b"c NO [AUTHORIZATIONFAILED]")
    s.sendall(b"d AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode()) + b"\r\n")
    line = f.readline()
    assert line.startswith(b"d OK [CAPABILITY"), line
    s.sendall(b"e AUTHENTICATE PLAIN =\r\n")
    assert f.readline().startswith(b"e BAD")  # already logged in
    s.close()


def test_writes_on_a_passive_database_are_refused_reads_go_on(imap):
    imap.deliver("alice", message(1))
    c = imaplib.IMAP4("127.0.0.1", imap.port)
    c.login("alice", PASSWORD)
    c.select("INBOX")
    imap.db.set_writable(False)  # this node lost the active role
    try:
        typ, data = c.store("1", "+FLAGS", "\\Seen")
        assert typ == "NO" and b"UNAVAILABLE" in data[0]
        typ, data = c.append("INBOX", None, None, message(2))
        assert typ == "NO" and b"UNAVAILABLE" in data[0]
        assert c.fetch("1", "(BODY.PEEK[])")[1][0][1] == message(1)
    finally:
        imap.db.set_writable(True)
    assert c.store("1", "+FLAGS", "\\Seen")[0] == "OK"
    c.logout()


def test_connection_limit_for_the_listener(tmp_path):
    srv, t = start_server(tmp_path, max_connections=2)
    try:
        a = socket.create_connection(("127.0.0.1", srv.port))
        b = socket.create_connection(("127.0.0.1", srv.port))
        assert a.recv(100).startswith(b"* OK") and b.recv(100).startswith(b"* OK")
        c = socket.create_connection(("127.0.0.1", srv.port))
        assert c.recv(100).startswith(b"* BYE [UNAVAILABLE]")
        a.close()
        time.sleep(0.2)
        d = socket.create_connection(("127.0.0.1", srv.port))
        assert d.recv(100).startswith(b"* OK")
        for s in (b, c, d):
            s.close()
    finally:
        stop_server(srv, t)
