"""Delivery semantics a peer relies on: recipients in several databases, SMTP's single reply when
recipients fare differently, internal date, and shutdown with deliveries in flight."""

from __future__ import annotations

import functools
import smtplib
import threading
import time

from tests.helpers.delivery import DOMAIN, FAST_HASH, DeliveryNode, lmtp_session, message, stuff
from tests.helpers.threads import run_workers


def test_recipients_in_two_databases_one_transaction(node):
    other = node.store.create_database("other")
    other.commit("account_add", name="carol", hash=FAST_HASH, quota=0)
    c = lmtp_session(node.lmtp.port)
    c.cmd("MAIL FROM:<s@example.org>")
    for r in ("carol", "alice", "carol+x"):
        assert c.cmd(f"RCPT TO:<{r}@{DOMAIN}>")[0].startswith("250")
    c.cmd("DATA")
    c.send(stuff(message("two-dbs")))
    assert [c.line()[:9] for _ in range(3)] == ["250 2.0.0"] * 3
    assert len(node.messages("alice")) == 1
    rows = other.read_sync(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    assert rows == 1  # carol and carol+x are the same INBOX: one copy


def test_internal_date_is_delivery_time(node):
    before = time.time_ns() // 1000
    with smtplib.LMTP("127.0.0.1", node.lmtp.port) as lm:
        lm.sendmail("s@example.org", [f"alice@{DOMAIN}"], message("dated"))  # its Date: header is absent
    after = time.time_ns() // 1000
    [date] = node.db.read_sync(lambda conn: [r[0] for r in conn.execute("SELECT internal_date_us FROM messages")])
    assert before <= date <= after


def test_smtp_mixed_result_is_reported_as_the_failure(node):
    """One SMTP reply for all: alice gets the message, bob is over quota, so the reply is bob's
    552 (the relay bounces for bob) and never a 250 that would hide bob's failure."""
    node.db.commit("quota_set", name="bob", quota=100)
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        s.ehlo()
        s.mail("s@example.org")
        s.rcpt(f"alice@{DOMAIN}")
        s.rcpt(f"bob@{DOMAIN}")
        code, text = s.data(message("mixed"))
    assert code == 552 and text.startswith(b"5.2.2 <bob@")
    assert len(node.messages("alice")) == 1 and node.messages("bob") == []


def test_shutdown_with_deliveries_in_flight(tmp_path):
    """Every client gets either its 250 (and the message is stored) or a 421 (and may retry):
    no acknowledged message is missing, no reply is lost."""
    node = DeliveryNode(tmp_path / "n")
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        try:
            c = lmtp_session(node.lmtp.port)
        except (OSError, ConnectionError, AssertionError):
            return  # connected after the listener closed: refused, nothing sent
        for i in range(1000):
            subject = f"s-{k}-{i}"
            try:
                c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
                first = c.line()
                if not first.startswith("250"):
                    with lock:
                        outcomes.append((subject, first))
                    return
                c.line(), c.line()
                c.send(stuff(message(subject)))
                reply = c.line()
            except (OSError, ConnectionError):
                return
            with lock:
                outcomes.append((subject, reply))
            if not reply.startswith("250"):
                return

    def close_listeners() -> None:
        time.sleep(0.5)
        node.call(node.lmtp.close())
        node.call(node.smtp.close())

    run_workers([functools.partial(client, k) for k in range(6)], timeout=20, during=close_listeners)
    stored = {raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for raw in node.messages("alice")}
    acked = {s for s, r in outcomes if r.startswith("250")}
    assert acked and acked <= stored
    assert all(r.startswith(("250", "421")) for _, r in outcomes), [r for _, r in outcomes if not r.startswith(("250", "421"))]
    assert any(r.startswith("421") for _, r in outcomes) or len(stored) == len(acked)
    node.loop.call_soon_threadsafe(node.loop.stop)
    node.thread.join(5)
    node.store.close()
