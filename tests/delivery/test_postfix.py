"""Debian's Postfix relays into mailpair over LMTP: a private Postfix instance (tests/delivery/
postfix_peer.py) takes mail with SMTP and hands it to the LMTP listener; Postfix's own log shows
each recipient's LMTP answer, and the store holds what was acknowledged."""

from __future__ import annotations

import smtplib

import pytest

from tests.helpers.delivery import DOMAIN, message
from tests.helpers.postfix import PostfixRelay, available

pytestmark = pytest.mark.skipif(not available(), reason="needs root and Debian's postfix (scripts/setup.sh --test)")


def test_postfix_relays_over_lmtp(node):
    node.db.commit("quota_set", name="bob", quota=100)  # bob's mailbox is full for this message
    relay = PostfixRelay(DOMAIN, node.lmtp.port).start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port) as s:
            refused = s.sendmail("sender@relay.test", [f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"ghost@{DOMAIN}"],
                                 message("via postfix", size=3000))  # fmt: skip
            assert refused == {}  # Postfix queues first; the LMTP answers come later
        text = relay.wait_log(f"to=<alice@{DOMAIN}>")
        relay.wait_log(f"to=<bob@{DOMAIN}>")
        text = relay.wait_log(f"to=<ghost@{DOMAIN}>")
        lines = {
            rcpt: next(ln for ln in text.splitlines() if f"to=<{rcpt}@{DOMAIN}>" in ln) for rcpt in ("alice", "bob", "ghost")
        }
        print("\n".join(lines.values()))
        assert "status=sent" in lines["alice"] and "250 2.0.0" in lines["alice"], lines["alice"]
        assert "status=bounced" in lines["bob"] and "552 5.2.2" in lines["bob"], lines["bob"]
        assert "status=bounced" in lines["ghost"] and "550 5.1.1" in lines["ghost"], lines["ghost"]
        [raw] = node.messages("alice")
        assert raw.startswith(b"Return-Path: <sender@relay.test>\r\nReceived: from relay.test")
        assert b"with LMTP id" in raw and message("via postfix", size=3000).split(b"\r\n\r\n")[1] in raw
        assert node.messages("bob") == []
    finally:
        relay.stop()


def test_postfix_retries_after_451(node):
    """The store cannot write (passive copy): 451 4.3.0, Postfix keeps the message and delivers
    it once the store takes writes again. Nothing is lost, nothing delivered twice."""
    node.db.set_writable(False)
    relay = PostfixRelay(DOMAIN, node.lmtp.port).start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port) as s:
            s.sendmail("sender@relay.test", [f"alice@{DOMAIN}"], message("deferred"))
        text = relay.wait_log("status=deferred")
        assert "451 4.3.0" in text
        node.db.set_writable(True)
        relay.wait_log("status=sent")
        assert len(node.messages("alice")) == 1
    finally:
        relay.stop()
