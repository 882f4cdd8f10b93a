"""APPEND with a client that does not set TCP_NODELAY (Python's imaplib as shipped) must not
wait for a delayed ACK: imaplib writes the literal and its final CRLF in two writes, so Nagle
holds the CRLF until the literal is acknowledged (transport.py acknowledges at once)."""

from __future__ import annotations

import imaplib
import socket
import statistics
import time

from .conftest import PASSWORD


def test_imaplib_append_p50_well_under_10_ms(imap):
    c = imaplib.IMAP4(imap.host, imap.port)
    # imaplib as shipped: Nagle on (the point of the test), checked rather than assumed.
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    c.login("alice", PASSWORD)
    msg = b"From: a@example.test\r\nSubject: latency\r\n\r\n" + b"y" * 4000 + b"\r\n"
    c.append("INBOX", None, None, msg)  # warm up
    times = []
    for _ in range(60):
        started = time.perf_counter()
        typ, _ = c.append("INBOX", None, None, msg)
        times.append((time.perf_counter() - started) * 1000)
        assert typ == "OK"
    c.logout()
    p50 = statistics.median(times)
    # A delayed ACK costs 40 ms a time on Linux; the work itself is a few ms even on a busy box.
    assert p50 < 10, f"APPEND p50 {p50:.1f} ms: {sorted(times)[:5]} .. {sorted(times)[-5:]}"
