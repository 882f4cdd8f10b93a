"""Delivery (LMTP and SMTP) against one address that tries to lock everyone out (issue 17): 200
idle LMTP connections from one address made a legitimate MTA get 421, a client that says nothing
kept its slot for the whole command timeout, and a DATA sent at one byte every 2 s stayed open for
minutes (the 10-minute data timeout)."""

from __future__ import annotations

import smtplib
import socket
import time
from dataclasses import replace

import pytest

from mailpair.protocols.delivery import DeliverySettings
from tests.helpers.delivery import DOMAIN, DeliveryNode, RawClient, lmtp_session, message


def _from(address: str, port: int) -> RawClient:
    """A RawClient whose connection comes from this loopback address."""
    c = RawClient.__new__(RawClient)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))
    c.buf = b""
    return c


def test_idle_connections_from_one_address_do_not_lock_out_another_mta(tmp_path):
    node = DeliveryNode(tmp_path / "node")  # the defaults a node runs with
    held: list[socket.socket] = []
    try:
        for _ in range(200):  # the attack as found: 200 idle connections from one address
            held.append(socket.create_connection(("127.0.0.1", node.lmtp.port), timeout=10))
        time.sleep(0.5)
        # The MTA, from another address, is served and delivers.
        mta = _from("127.0.0.2", node.lmtp.port)
        assert mta.reply()[0].startswith("220"), "a legitimate MTA was refused"
        mta.close()
        with smtplib.LMTP("127.0.0.1", node.lmtp.port, source_address=("127.0.0.2", 0)) as lm:
            assert lm.sendmail("s@example.org", [f"alice@{DOMAIN}"], message("through")) == {}
        assert len(node.messages("alice")) == 1
        # The address that holds its share is refused with a reply that says why.
        extra = RawClient(node.lmtp.port)
        assert extra.line().startswith("421 4.7.0 Too many connections from your address")
        extra.close()
        # SMTP keeps its own count, and the same rule.
        with smtplib.SMTP("127.0.0.1", node.smtp.port, source_address=("127.0.0.3", 0)) as s:
            assert s.sendmail("s@example.org", [f"bob@{DOMAIN}"], message("smtp")) == {}
    finally:
        for s in held:
            s.close()
        node.close()


def test_a_client_that_says_nothing_is_dropped_soon(tmp_path):
    defaults = DeliverySettings()
    assert defaults.idle_timeout <= 60 < defaults.command_timeout  # short before the first command
    node = DeliveryNode(tmp_path / "node", DeliverySettings(domain=DOMAIN, idle_timeout=0.5))
    try:
        silent = RawClient(node.lmtp.port)
        assert silent.line().startswith("220")
        started = time.monotonic()
        assert silent.line().startswith("421 4.4.2")  # before the first command
        assert silent.closed(2) and time.monotonic() - started < 3
        between = lmtp_session(node.lmtp.port)  # after a greeting, with no transaction open
        assert between.line().startswith("421 4.4.2")
        # Inside a transaction the (longer) command timeout applies, not the idle one.
        c = lmtp_session(node.lmtp.port)
        assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")
        time.sleep(1.0)
        assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>")[0].startswith("250")
    finally:
        node.close()


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
def test_data_sent_one_byte_every_two_seconds_is_dropped(tmp_path, protocol):
    settings = DeliverySettings(domain=DOMAIN)  # the defaults
    node = DeliveryNode(tmp_path / "node", settings)
    try:
        port = node.lmtp.port if protocol == "lmtp" else node.smtp.port
        c = RawClient(port, timeout=60)
        assert c.reply()[0].startswith("220")
        assert c.cmd("LHLO mta.test" if protocol == "lmtp" else "EHLO mta.test")[-1].startswith("250 ")
        assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")
        assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>")[0].startswith("250")
        assert c.cmd("DATA")[0].startswith("354")
        started = time.monotonic()
        c.sock.settimeout(2.0)
        reply = None
        for byte in b"Subject: slow\r\n\r\n" + b"x" * 200:
            try:
                c.send(bytes([byte]))
            except OSError:
                break
            try:
                reply = c.line()
                break
            except TimeoutError:
                pass
            except ConnectionError:
                break
            assert time.monotonic() - started < 40, "a trickling DATA is still open after 40 s"
        assert reply is not None and reply.startswith("421 4.4.2") and "too slowly" in reply, reply
        assert c.closed(5)
        assert node.messages("alice") == []
        with smtplib.LMTP("127.0.0.1", node.lmtp.port) as lm:  # everyone else is still served
            assert lm.sendmail("s@example.org", [f"bob@{DOMAIN}"], message("after")) == {}
    finally:
        node.close()


def test_a_slow_but_steady_data_is_taken(tmp_path):
    """A client above the minimum rate is not cut, however long its message takes to arrive."""
    node = DeliveryNode(tmp_path / "node", DeliverySettings(domain=DOMAIN, min_data_rate=2000, data_rate_grace=0.5))
    try:
        c = lmtp_session(node.lmtp.port)
        assert c.cmd("MAIL FROM:<s@example.org>")[0].startswith("250")
        assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>")[0].startswith("250")
        assert c.cmd("DATA")[0].startswith("354")
        body = message("steady", size=12_000).replace(b"\r\n.", b"\r\n..")
        for i in range(0, len(body), 1000):  # 1000 bytes every 0.25 s: 4000 bytes/s for 3 s
            c.send(body[i : i + 1000])
            time.sleep(0.25)
        c.send(b"\r\n.\r\n")
        assert c.line().startswith("250 2.0.0")
    finally:
        node.close()


def test_address_key_counts_an_ipv6_host_by_its_64():
    from mailpair.protocols.delivery.admission import address_key

    assert address_key(("2001:db8:1:2::1", 25, 0, 0)) == address_key(("2001:db8:1:2:ffff::9", 25, 0, 0)) == "2001:db8:1:2::/64"
    assert address_key(("::ffff:192.0.2.7", 25, 0, 0)) == "192.0.2.7"
    assert address_key(("127.0.0.2", 25)) == "127.0.0.2"
    assert address_key("") is None  # a Unix-socket peer
    assert replace(DeliverySettings(), max_connections_per_address=5).max_connections_per_address == 5


def test_an_operator_tunes_the_limits_in_node_json(tmp_path):
    from mailpair.config import NodeConfig
    from mailpair.protocols import available_listeners

    cfg = NodeConfig(name="n", data=str(tmp_path), delivery={"max_connections_per_address": 80, "idle_timeout": 5})
    got = {name: settings for name, _, settings in available_listeners(cfg)}
    assert got["lmtp"].max_connections_per_address == got["smtp"].max_connections_per_address == 80
    assert got["lmtp"].idle_timeout == 5
    with pytest.raises(ValueError, match="max_conections"):
        available_listeners(NodeConfig(name="n", data=str(tmp_path), delivery={"max_conections": 1}))
