"""LMTP with a raw-socket client: per-recipient DATA replies in RCPT order, each true to what the
store made durable; +detail folders; trace headers; Unix socket."""

from __future__ import annotations

import re
import smtplib

from tests.helpers.delivery import DOMAIN, DeliveryNode, RawClient, lmtp_session, message, stuff


def test_per_recipient_replies_in_rcpt_order(node):
    node.db.commit("quota_set", name="bob", quota=100)  # bob cannot take the message
    c = lmtp_session(node.lmtp.port)
    assert c.cmd("MAIL FROM:<sender@example.org>")[0].startswith("250")
    assert c.cmd(f"RCPT TO:<alice@{DOMAIN}>")[0].startswith("250 2.1.5")
    assert c.cmd(f"RCPT TO:<nobody@{DOMAIN}>")[0].startswith("550 5.1.1")
    assert c.cmd(f"RCPT TO:<bob@{DOMAIN}>")[0].startswith("250 2.1.5")
    assert c.cmd(f"RCPT TO:<alice+lists@{DOMAIN}>")[0].startswith("250 2.1.5")
    assert c.cmd("DATA")[0].startswith("354")
    c.send(stuff(message("order", size=2000)))
    replies = [c.line() for _ in range(3)]  # one per accepted recipient, in RCPT order
    assert replies[0].startswith(f"250 2.0.0 <alice@{DOMAIN}>")
    assert replies[1].startswith(f"552 5.2.2 <bob@{DOMAIN}>")
    # alice+lists: no folder "lists", so INBOX; same mailbox as the first, one copy
    assert replies[2].startswith(f"250 2.0.0 <alice+lists@{DOMAIN}>")
    assert c.cmd("NOOP")[0].startswith("250")  # nothing else was sent
    assert len(node.messages("alice")) == 1 and node.messages("bob") == []
    c.cmd("QUIT")


def test_detail_delivers_to_existing_folder_and_headers(node):
    node.db.commit("mailbox_create", account="alice", name="Lists")
    c = lmtp_session(node.lmtp.port)
    c.cmd("MAIL FROM:<list-bounces@example.org>")
    assert c.cmd(f"RCPT TO:<Alice+Lists@{DOMAIN.upper()}>")[0].startswith("250")
    c.cmd("DATA")
    c.send(stuff(message("detail")))
    assert c.line().startswith("250 2.0.0")
    [raw] = node.messages("alice", "Lists")
    assert node.messages("alice") == []
    head = raw.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("Return-Path: <list-bounces@example.org>\r\nReceived: from client.test ([127.0.0.1])")
    assert re.search(r"by example\.test \(mailpair\) with LMTP id \S+\r\n\tfor <Alice\+Lists@EXAMPLE\.TEST>;", head)
    assert raw.endswith(message("detail"))  # content byte for byte


def test_dot_stuffing_and_null_sender(node):
    body = ".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n"
    c = lmtp_session(node.lmtp.port)
    assert c.cmd("MAIL FROM:<>")[0].startswith("250")
    c.cmd(f"RCPT TO:<bob@{DOMAIN}>")
    c.cmd("DATA")
    c.send(stuff(message("dots", body=body)))
    assert c.line().startswith("250")
    [raw] = node.messages("bob")
    assert raw.startswith(b"Return-Path: <>\r\n")
    assert raw.endswith(body.encode())


def test_smtplib_lmtp_and_unix_socket(tmp_path):
    from dataclasses import replace

    path = str(tmp_path / "lmtp.sock")
    n = DeliveryNode(tmp_path / "n")
    try:
        from mailpair.protocols.lmtp import start_lmtp

        lst = n.call(start_lmtp(n.store, replace(n.settings, unix_socket=path)))
        try:
            with smtplib.LMTP(path) as lm:
                assert lm.sendmail("s@example.org", [f"alice@{DOMAIN}"], message("unix")) == {}
            c = lmtp_session(path=path)
            c.cmd("MAIL FROM:<s@example.org>")
            c.cmd("RCPT TO:<bob>")  # bare user name: the node's domain
            c.cmd("DATA")
            c.send(stuff(message("unix2")))
            assert c.line().startswith("250 2.0.0 <bob>")
        finally:
            n.call(lst.close())
        assert len(n.messages("alice")) == 1 and len(n.messages("bob")) == 1
    finally:
        n.close()


def test_lhlo_capabilities_and_wrong_greeting(node):
    c = lmtp_session(node.lmtp.port)
    c2 = RawClient(node.lmtp.port)
    assert c2.reply()[0].startswith("220")
    assert c2.cmd("EHLO x")[0].startswith("500")
    assert c2.cmd("MAIL FROM:<a@b.c>")[0].startswith("503")
    caps = c.cmd("LHLO again.test")
    text = "\n".join(caps)
    for cap in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "SIZE"):
        assert cap in text
    assert "AUTH" not in text


def test_metrics_count_connections_commands_and_results(node):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("mailpair_delivery_connections_total", protocol="lmtp"),
        value("mailpair_delivery_commands_total", protocol="lmtp", command="RCPT"),
        value("mailpair_deliveries_total", protocol="lmtp", result="ok"),
        value("mailpair_deliveries_total", protocol="lmtp", result="rejected"),
    )
    c = lmtp_session(node.lmtp.port)
    c.cmd("MAIL FROM:<s@example.org>")
    c.cmd(f"RCPT TO:<alice@{DOMAIN}>")
    c.cmd(f"RCPT TO:<ghost@{DOMAIN}>")
    c.cmd("DATA")
    c.send(stuff(message("metrics")))
    assert c.line().startswith("250")
    c.cmd("QUIT")
    after = (
        value("mailpair_delivery_connections_total", protocol="lmtp"),
        value("mailpair_delivery_commands_total", protocol="lmtp", command="RCPT"),
        value("mailpair_deliveries_total", protocol="lmtp", result="ok"),
        value("mailpair_deliveries_total", protocol="lmtp", result="rejected"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1, 1]
