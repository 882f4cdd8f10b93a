"""Whole sessions under hostile input: whatever a client sends, every tagged command gets a
tagged OK/NO/BAD, the server never reports an internal error, and the connection stays usable."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import PASSWORD, message, start_server, stop_server

WORDS = [
    "FETCH",
    "UID",
    "STORE",
    "SEARCH",
    "COPY",
    "MOVE",
    "EXPUNGE",
    "SELECT",
    "EXAMINE",
    "LIST",
    "LSUB",
    "STATUS",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "APPEND",
    "CLOSE",
    "UNSELECT",
    "NOOP",
    "CHECK",
    "ENABLE",
    "NAMESPACE",
    "ID",
    "GETQUOTAROOT",
    "CAPABILITY",
    "LOGIN",
    "AUTHENTICATE",
    "STARTTLS",
    "1",
    "1:*",
    "*",
    "2,4:5",
    "0",
    "4294967296",
    "$",
    "(",
    ")",
    '"',
    '"x"',
    "NIL",
    "INBOX",
    "Trash",
    "FLAGS",
    "+FLAGS.SILENT",
    "-FLAGS",
    "\\Seen",
    "\\Deleted",
    "BODY[]",
    "BODY.PEEK[1.2.MIME]",
    "BODY[HEADER.FIELDS (From)]<0.5>",
    "BINARY[1]",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "RFC822",
    "ALL",
    "OR",
    "NOT",
    "HEADER",
    "SUBJECT",
    "SINCE",
    "1-Jan-2020",
    "bad-date",
    "CHARSET",
    "KOI8-R",
    "RETURN",
    "(MIN MAX COUNT SAVE)",
    "(CHANGEDSINCE 1)",
    "(UNCHANGEDSINCE 0)",
    "CONDSTORE",
    "QRESYNC",
    '""',
    "%",
    "x/y",
    "&Jjo-",
    "&bad",
    "[",
    "]",
    "<1.2>",
    "PLAIN",
    "=",
    "\\",
    "~",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, t = start_server(tmp_path_factory.mktemp("fuzz"))
    srv.add_user("alice")
    for i in range(5):
        srv.deliver("alice", message(i))
    yield srv
    stop_server(srv, t)


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "server dropped the connection"
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def cmd(self, text: bytes) -> list[bytes]:
        tag = text.split(b" ", 1)[0]
        self.sock.sendall(text + b"\r\n")
        return self.until_tagged(tag)


def junk_line():
    word = st.sampled_from(WORDS) | st.text(
        alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_characters="\r\n{}"), max_size=12
    )
    return st.lists(word, min_size=0, max_size=10).map(lambda ws: " ".join(ws).encode("utf-8"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(junk_line(), min_size=1, max_size=8), select=st.booleans())
def test_fuzz_sessions(server, lines, select):
    c = Conn(server.port)
    assert c.line().startswith(b"* OK")
    assert c.cmd(b"L LOGIN alice " + PASSWORD.encode())[-1].startswith(b"L OK")
    if select:
        assert c.cmd(b"S SELECT INBOX")[-1].startswith(b"S OK")
    for i, body in enumerate(lines):
        tag = b"f%d" % i
        if body.strip().upper().startswith((b"IDLE", b"LOGOUT")) or b"IDLE" in body.upper() or b"LOGOUT" in body.upper():
            continue
        if body.upper().startswith(b"AUTHENTICATE") or b" AUTHENTICATE" in body.upper():
            continue
        out = c.cmd(tag + b" " + body)
        assert out[-1].split(b" ")[1] in (b"OK", b"NO", b"BAD"), out
        assert not any(b"SERVERBUG" in x for x in out), (body, out)
    assert c.cmd(b"z NOOP")[-1].startswith(b"z OK")
    c.sock.close()


def test_garbage_without_tag_and_binary_noise(server):
    c = Conn(server.port)
    c.line()
    c.sock.sendall(b"\x00\xff\xfe garbage\r\n")
    assert b"BAD" in c.line()
    c.sock.sendall(b"\r\n")
    assert b"BAD" in c.line()
    assert c.cmd(b"a NOOP")[-1].startswith(b"a OK")


def test_literal_over_limit_gets_no_continuation(server):
    c = Conn(server.port)
    c.line()
    c.cmd(b"L LOGIN alice " + PASSWORD.encode())
    big = server.settings.literal_limit() + 1
    c.sock.sendall(b"a1 APPEND INBOX {%d}\r\n" % big)
    line = c.line()
    assert line.startswith(b"a1 NO [TOOBIG]"), line
    c.sock.sendall(b"a2 LOGIN {99999999}\r\n")
    assert c.line().startswith(b"a2 BAD")
    assert c.cmd(b"a3 NOOP")[-1].startswith(b"a3 OK")


def test_client_vanishing_mid_literal_and_mid_idle_leaves_nothing(server):
    for payload in (b"a1 APPEND INBOX {100}\r\npartial", b"a1 IDLE\r\n"):
        c = Conn(server.port)
        c.line()
        c.cmd(b"L LOGIN alice " + PASSWORD.encode())
        c.cmd(b"S SELECT INBOX")
        c.sock.sendall(payload)
        c.line()
        c.sock.close()
    import time

    deadline = time.time() + 5
    while time.time() < deadline and server.server.sessions:
        time.sleep(0.05)
    assert not server.server.sessions
    assert server.server.user_connections.get("alice", 0) == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    parts=st.lists(
        st.tuples(junk_line(), st.binary(max_size=40), junk_line()),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_sessions_with_literals(server, parts):
    """Commands carrying non-synchronising literals (LITERAL+) of any bytes in any position."""
    c = Conn(server.port)
    c.line()
    c.cmd(b"L LOGIN alice " + PASSWORD.encode())
    c.cmd(b"S SELECT INBOX")
    for i, (head, lit, tail) in enumerate(parts):
        if any(w in (head + tail).upper() for w in (b"IDLE", b"LOGOUT", b"AUTHENTICATE", b"COMPRESS")):
            continue
        tag = b"q%d" % i
        c.sock.sendall(tag + b" " + head + b" {%d+}\r\n" % len(lit) + lit + b" " + tail + b"\r\n")
        out = c.until_tagged(tag)
        assert out[-1].split(b" ")[1] in (b"OK", b"NO", b"BAD"), out
        assert not any(b"SERVERBUG" in x for x in out), (head, lit, tail, out)
    assert c.cmd(b"z NOOP")[-1].startswith(b"z OK")
    c.sock.close()


def test_deep_nesting_is_refused_cleanly(server):
    c = Conn(server.port)
    c.line()
    c.cmd(b"L LOGIN alice " + PASSWORD.encode())
    c.cmd(b"S SELECT INBOX")
    out = c.cmd(b"a SEARCH " + b"NOT " * 5000 + b"ALL")
    assert out[-1].startswith(b"a BAD")
    out = c.cmd(b"b SEARCH " + b"OR ALL " * 3000 + b"ALL")
    assert out[-1].startswith(b"b BAD")
    out = c.cmd(b"c SEARCH " + b"(" * 3000 + b"ALL" + b")" * 3000)
    assert out[-1].startswith(b"c BAD")
    assert c.cmd(b"z NOOP")[-1].startswith(b"z OK")
