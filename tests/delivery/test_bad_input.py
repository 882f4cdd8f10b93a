"""Bad input and faults: each gets a clear reply, nothing partial is stored, and the listener
keeps serving other clients (checked after each case with a fresh delivery)."""

from __future__ import annotations

import smtplib
import socket
import time
from dataclasses import replace

import pytest

from mailpair.protocols.delivery import DeliverySettings
from tests.helpers.delivery import DOMAIN, DeliveryNode, RawClient, lmtp_session, message, stuff


def still_serving(node: DeliveryNode, user: str = "bob") -> None:
    before = len(node.messages(user))
    with smtplib.LMTP("127.0.0.1", node.lmtp.port) as lm:
        assert lm.sendmail("s@example.org", [f"{user}@{DOMAIN}"], message("after")) == {}
    assert len(node.messages(user)) == before + 1


def start_data(c: RawClient, rcpts: list[str]) -> None:
    assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}@{DOMAIN}>")[0].startswith("250")
    assert c.cmd("DATA")[0].startswith("354")


@pytest.mark.parametrize(
    "body, expect",
    [
        (b"line one\nbare LF\r\n", "550 5.6.0 Message contains a bare LF"),
        (b"x" * 1200 + b"\r\n", "550 5.6.0 Message has a line longer than 1000 bytes"),
        (b"nul \x00 byte\r\n", "550 5.6.0 Message contains NUL bytes"),
    ],
    ids=["bare-lf", "long-line", "nul"],
)
def test_bad_content_refused_per_recipient(node, body, expect):
    c = lmtp_session(node.lmtp.port)
    start_data(c, ["alice", "bob"])
    c.send(b"Subject: bad\r\n\r\n" + body + b".\r\n")
    assert c.line().startswith(expect)  # one reply per recipient, each the refusal
    assert c.line().startswith(expect)
    # the same session goes on: a good message right after
    start_data(c, ["alice"])
    c.send(stuff(message("good")))
    assert c.line().startswith("250 2.0.0")
    assert [m.endswith(message("good")) for m in node.messages("alice")] == [True]
    assert node.messages("bob") == []
    still_serving(node)


def test_bare_lf_dot_does_not_end_data(node):
    """'\\n.\\n' and '\\n.\\r\\n' are not the end of the message (no SMTP smuggling)."""
    c = lmtp_session(node.lmtp.port)
    start_data(c, ["alice"])
    c.send(b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<evil@x>\r\nstill data\n.\r\nmore\r\n.\r\n")
    assert c.line().startswith("550 5.6.0 Message contains a bare LF")
    assert c.cmd("NOOP")[0].startswith("250")
    assert node.count() == 0


def test_long_command_line(node):
    c = lmtp_session(node.lmtp.port)
    assert c.cmd("MAIL FROM:<" + "a" * 5000 + "@example.org>")[0].startswith("500")
    assert c.cmd("NOOP")[0].startswith("250")
    start_data(c, ["alice"])
    c.send(stuff(message("ok")))
    assert c.line().startswith("250")


@pytest.mark.parametrize(
    "address, code",
    [
        ("<alice bob@example.test>", "553"),
        ("<@@>", "553"),
        ("<../etc@example.test>", "550 5.1.1"),
        ("<alice@example.test", "553"),
        ("<" + "a" * 300 + "@example.test>", "553 5.1.3"),
        ("<" + "a" * 100 + "@example.test>", "550 5.1.1"),
        ("<alice@other.example>", "550 5.1.1"),
        ("", "501"),
    ],
)
def test_invalid_recipient_address(node, address, code):
    c = lmtp_session(node.lmtp.port)
    assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")
    assert c.cmd(f"RCPT TO:{address}")[0].startswith(code)
    assert c.cmd("DATA")[0].startswith("503")  # no recipient was accepted
    assert c.cmd("NOOP")[0].startswith("250")
    assert node.count() == 0


def test_invalid_sender_address(node):
    c = lmtp_session(node.lmtp.port)
    assert c.cmd("MAIL FROM:<a b@c>")[0].startswith("553")
    assert c.cmd("MAIL FROM:<s@example.org> BODY=9BIT")[0].startswith("501")
    assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")


def test_disconnect_mid_data(node):
    for _ in range(3):
        c = lmtp_session(node.lmtp.port)
        start_data(c, ["alice"])
        c.send(b"Subject: cut\r\n\r\nhalf a message\r\n")
        c.close()
    s = socket.create_connection(("127.0.0.1", node.smtp.port))  # and one that resets hard
    s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    time.sleep(0.2)
    assert node.messages("alice") == []
    still_serving(node)


def small_node(tmp_path, **changes) -> DeliveryNode:
    return DeliveryNode(tmp_path / "n", settings=replace(DeliverySettings(domain=DOMAIN), **changes))


def test_message_that_never_ends(tmp_path):
    node = small_node(tmp_path, max_message_bytes=20_000)
    try:
        c = lmtp_session(node.lmtp.port)
        start_data(c, ["alice"])
        chunk = b"never ending line of data\r\n" * 1000
        try:
            for _ in range(200):  # far past the limit, no terminator
                c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up while we were still sending: expected
        assert c.line().startswith("552 5.3.4")
        assert c.closed()
        assert node.count() == 0
        still_serving(node)
    finally:
        node.close()


def test_slow_message_times_out(tmp_path):
    node = small_node(tmp_path, data_timeout=1.0)
    try:
        c = lmtp_session(node.lmtp.port)
        start_data(c, ["alice"])
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                c.send(b"a trickle\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed or c.closed(1)
        assert time.monotonic() - started < 4
        assert node.count() == 0
        still_serving(node)
    finally:
        node.close()


def test_oversized_message_keeps_session_in_step(tmp_path):
    node = small_node(tmp_path, max_message_bytes=10_000)
    try:
        c = lmtp_session(node.lmtp.port)
        start_data(c, ["alice", "bob"])
        c.send(stuff(message("big", size=50_000)))
        assert c.line().startswith("552 5.3.4")
        assert c.line().startswith("552 5.3.4")  # LMTP: one reply per recipient here too
        start_data(c, ["alice"])
        c.send(stuff(message("fits", size=2_000)))
        assert c.line().startswith("250")
        assert node.count() == 1
    finally:
        node.close()


def test_pipelining_abuse(node):
    # Everything in one write, message text before the 354 and after a refused RCPT: the text is
    # read as commands (refused), the client is cut off after too many bad ones, nothing stored.
    c = lmtp_session(node.lmtp.port)
    junk = b"".join(b"junk line %d\r\n" % i for i in range(20))
    c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<ghost@example.test>\r\nDATA\r\n" + junk + b".\r\nQUIT\r\n")
    assert c.reply()[0].startswith("250")
    assert c.reply()[0].startswith("550 5.1.1")
    assert c.reply()[0].startswith("503")
    replies = []
    while not c.closed(0.5) or c.buf:
        try:
            replies.append(c.line())
        except ConnectionError:
            break
    assert replies and all(r.startswith(("500", "502")) for r in replies), replies
    assert replies[-1].startswith("502 5.5.1 Too many unrecognized commands")
    assert node.count() == 0
    # a flood of commands without reading replies is answered in order
    c = lmtp_session(node.lmtp.port)
    c.send(b"NOOP\r\n" * 3000 + b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    for _ in range(3000):
        assert c.line().startswith("250")
    assert c.line().startswith("250") and c.line().startswith("250") and c.line().startswith("354")
    c.send(stuff(message("flood")))
    assert c.line().startswith("250 2.0.0")
    still_serving(node)


def test_legitimate_pipelining(node):
    c = lmtp_session(node.lmtp.port)
    c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
           b"RCPT TO:<bob@example.test>\r\nDATA\r\n")  # fmt: skip
    assert [c.line()[:3] for _ in range(5)] == ["250", "250", "550", "250", "354"]
    c.send(stuff(message("piped")) + b"MAIL FROM:<s@example.org>\r\nQUIT\r\n")  # RFC 2920: after the dot
    assert [c.line()[:3] for _ in range(4)] == ["250", "250", "250", "221"]
    assert node.count() == 2


def test_connection_limit(tmp_path):
    node = small_node(tmp_path, max_connections=3)
    try:
        held = [lmtp_session(node.lmtp.port) for _ in range(3)]
        extra = RawClient(node.lmtp.port)
        assert extra.line().startswith("421 4.7.0")
        assert extra.closed()
        held[0].cmd("QUIT")
        time.sleep(0.2)
        still_serving(node)
    finally:
        node.close()


def test_store_unavailable_gives_451(node):
    node.db.set_writable(False)  # the copy became passive: the store refuses every write
    c = lmtp_session(node.lmtp.port)
    start_data(c, ["alice", "bob"])
    c.send(stuff(message("refused")))
    assert c.line().startswith("451 4.3.0 <alice@example.test>")
    assert c.line().startswith("451 4.3.0 <bob@example.test>")
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("s@example.org", [f"alice@{DOMAIN}"], message("refused"))
        assert e.value.smtp_code == 451
    node.db.set_writable(True)
    start_data(c, ["alice"])
    c.send(stuff(message("back")))
    assert c.line().startswith("250")


def test_shutdown_says_421(tmp_path):
    node = DeliveryNode(tmp_path / "n")
    c = lmtp_session(node.lmtp.port)
    s = RawClient(node.smtp.port)
    assert s.reply()[0].startswith("220")
    node.call(node.lmtp.close())
    node.call(node.smtp.close())
    assert c.line().startswith("421 4.3.2")
    assert s.line().startswith("421 4.3.2")
    assert c.closed() and s.closed()
    with pytest.raises(OSError):
        RawClient(node.lmtp.port).line()
    node.loop.call_soon_threadsafe(node.loop.stop)
    node.thread.join(5)
    node.store.close()


def test_idle_client_is_disconnected(tmp_path):
    node = small_node(tmp_path, command_timeout=0.5)
    try:
        c = lmtp_session(node.lmtp.port)
        c.cmd("MAIL FROM:<s@example.org>")  # then silence
        assert c.closed(3)
        still_serving(node)
    finally:
        node.close()
