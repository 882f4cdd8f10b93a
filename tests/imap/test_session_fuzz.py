"""Whole sessions under hostile input: whatever a client sends, every tagged command gets a
tagged OK/NO/BAD, the server never reports an internal error, and the connection stays usable.

The sessions run over memory transports (transport.py) on an ImapHost with no listener: no
socket is opened anywhere in this module, and the module checks that (socket.socket raises)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import close_memory_host, make_memory_host, message, sockets_forbidden

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
    m = make_memory_host(tmp_path_factory.mktemp("fuzz"))
    m.add_user("alice")
    for i in range(5):
        m.deliver("alice", message(i))
    with sockets_forbidden() as made:
        m.sockets_made = made
        yield m
        close_memory_host(m)
    assert not made, "a session opened a socket"


def test_no_socket_can_be_opened_here(server):
    """The guard is on: any attempt to open a socket fails (so the tests below prove something)."""
    with pytest.raises(AssertionError):
        socket.socket()
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 1))
    assert len(server.sockets_made) == 2
    server.sockets_made.clear()  # those two were this test's own


def junk_line():
    word = st.sampled_from(WORDS) | st.text(
        alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_characters="\r\n{}"), max_size=12
    )
    return st.lists(word, min_size=0, max_size=10).map(lambda ws: " ".join(ws).encode("utf-8"))


def _skipped(text: bytes) -> bool:
    """Commands that would end or change the session's mode (the fuzz checks command replies)."""
    up = text.upper()
    return any(w in up for w in (b"IDLE", b"LOGOUT", b"AUTHENTICATE", b"COMPRESS", b"STARTTLS"))


def _answered(out: list[bytes], tag: bytes) -> None:
    assert out[-1].startswith(tag + b" "), out
    assert out[-1].split(b" ")[1] in (b"OK", b"NO", b"BAD"), out
    assert not any(b"SERVERBUG" in x for x in out), out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(junk_line(), min_size=1, max_size=8), select=st.booleans())
def test_fuzz_sessions(server, lines, select):
    async def session():
        c = server.client()
        await c.login()
        if select:
            assert (await c.cmd(b"S SELECT INBOX"))[-1].startswith(b"S OK")
        for i, body in enumerate(lines):
            if _skipped(body):
                continue
            tag = b"f%d" % i
            _answered(await c.cmd(tag + b" " + body), tag)
        assert (await c.cmd(b"z NOOP"))[-1].startswith(b"z OK")
        await c.close()

    server.run(session())


def test_garbage_without_tag_and_binary_noise(server):
    async def session():
        c = server.client()
        await c.greeting()
        c.t.send(b"\x00\xff\xfe garbage\r\n")
        assert b"BAD" in await c.t.wait_for(b"* BAD")
        c.t.send(b"\r\n")
        assert b"BAD" in await c.t.wait_for(b"* BAD")
        assert (await c.cmd(b"a NOOP"))[-1].startswith(b"a OK")
        await c.close()

    server.run(session())


def test_literal_over_limit_gets_no_continuation(server):
    async def session():
        c = server.client()
        await c.login()
        big = server.host.settings.literal_limit() + 1
        c.t.send(b"a1 APPEND INBOX {%d}\r\n" % big)
        line = await c.t.wait_for(b"a1 ")
        assert line.startswith(b"a1 NO [TOOBIG]"), line
        c.t.send(b"a2 LOGIN {99999999}\r\n")
        assert (await c.t.wait_for(b"a2 ")).startswith(b"a2 BAD")
        assert (await c.cmd(b"a3 NOOP"))[-1].startswith(b"a3 OK")
        await c.close()

    server.run(session())


def test_client_vanishing_mid_literal_and_mid_idle_leaves_nothing(server):
    async def session():
        for payload, marker in ((b"a1 APPEND INBOX {100}\r\npartial", b"+ "), (b"a1 IDLE\r\n", b"+ ")):
            c = server.client()
            await c.login()
            await c.cmd(b"S SELECT INBOX")
            c.t.send(payload)
            await c.t.wait_for(marker)
            await c.close()  # end of stream, as when the peer goes away
        assert not server.host.sessions
        assert server.host.user_connections.get("alice", 0) == 0

    server.run(session())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(parts=st.lists(st.tuples(junk_line(), st.binary(max_size=40), junk_line()), min_size=1, max_size=5))
def test_fuzz_sessions_with_literals(server, parts):
    """Commands carrying non-synchronising literals (LITERAL+) of any bytes in any position."""

    async def session():
        c = server.client()
        await c.login()
        await c.cmd(b"S SELECT INBOX")
        for i, (head, lit, tail) in enumerate(parts):
            if _skipped(head + tail):
                continue
            tag = b"q%d" % i
            c.t.send(tag + b" " + head + b" {%d+}\r\n" % len(lit) + lit + b" " + tail + b"\r\n")
            _answered((await c.t.wait_for(tag + b" ")).split(b"\r\n")[:-1], tag)
        assert (await c.cmd(b"z NOOP"))[-1].startswith(b"z OK")
        await c.close()

    server.run(session())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(min_size=1, max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_fuzz_raw_bytes_in_pieces(server, data, cuts):
    """Any bytes, split anywhere: the session answers or closes, and never fails inside."""

    async def session():
        c = server.client()
        await c.login()
        edges = sorted({0, len(data), *(x for x in cuts if x < len(data))})
        for a, b in zip(edges, edges[1:], strict=False):
            c.t.send(data[a:b])
            await asyncio.sleep(0)
        c.t.send(b"\r\nzz NOOP\r\n")
        try:
            out = await c.t.wait_for(b"zz ", timeout=5)
        except (ConnectionError, TimeoutError):
            out = b""  # a literal left open swallows the NOOP, or the session said BYE: both fine
        assert b"SERVERBUG" not in out and b"SERVERBUG" not in c.t.received()
        await c.close()

    server.run(session())


def test_deep_nesting_is_refused_cleanly(server):
    async def session():
        c = server.client()
        await c.login()
        await c.cmd(b"S SELECT INBOX")
        assert (await c.cmd(b"a SEARCH " + b"NOT " * 5000 + b"ALL"))[-1].startswith(b"a BAD")
        assert (await c.cmd(b"b SEARCH " + b"OR ALL " * 3000 + b"ALL"))[-1].startswith(b"b BAD")
        assert (await c.cmd(b"c SEARCH " + b"(" * 3000 + b"ALL" + b")" * 3000))[-1].startswith(b"c BAD")
        assert (await c.cmd(b"z NOOP"))[-1].startswith(b"z OK")
        await c.close()

    server.run(session())
