"""Long soak (run with --slow; SOAK_SECONDS, default 60): many clients for a minute over LMTP and SMTP, good messages mixed
with every kind of bad input; afterwards the store holds exactly the acknowledged messages."""

from __future__ import annotations

import functools
import os
import random
import smtplib
import threading
import time

import pytest

from tests.helpers.delivery import DOMAIN, lmtp_session, message, stuff
from tests.helpers.threads import run_workers

BAD = [
    b"Subject: bad\r\n\r\nbare\nLF\r\n.\r\n",
    b"Subject: bad\r\n\r\nNUL\x00\r\n.\r\n",
    b"Subject: bad\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\n",
]


@pytest.mark.slow
def test_mixed_traffic_soak(node):
    seconds = int(os.environ.get("SOAK_SECONDS", "60"))
    acked: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def lmtp_client(k: int) -> None:
        rnd = random.Random(k)
        i = 0
        while time.monotonic() < stop:
            c = lmtp_session(node.lmtp.port)
            for _ in range(rnd.randint(1, 20)):
                i += 1
                subject = f"soak-{k}-{i}"
                kind = rnd.random()
                c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob+f@example.test>\r\nDATA\r\n")
                assert [c.line()[:3] for _ in range(4)] == ["250", "250", "250", "354"]
                if kind < 0.2:
                    c.send(rnd.choice(BAD))
                    assert c.line().startswith("550") and c.line().startswith("550")
                    continue
                if kind < 0.25:
                    c.send(b"Subject: cut\r\n\r\npartial")  # and hang up mid-DATA
                    break
                c.send(stuff(message(subject, size=rnd.randint(100, 20_000))))
                replies = [c.line(), c.line()]
                with lock:
                    (acked if all(r.startswith("250") for r in replies) else refused).append(subject)
            c.close()

    def smtp_client(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
                for _ in range(10):
                    i += 1
                    subject = f"smtp-{k}-{i}"
                    s.sendmail("s@example.org", [f"alice@{DOMAIN}"], message(subject, size=3000))
                    with lock:
                        acked.append(subject)

    # A worker's failed assert or error fails the test (in a plain thread it would only print).
    workers = [functools.partial(lmtp_client, k) for k in range(6)]
    workers += [functools.partial(smtp_client, k) for k in range(2)]
    run_workers(workers, timeout=seconds + 60)
    assert not refused
    subjects = [raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for raw in node.messages("alice")]
    assert sorted(subjects) == sorted(acked)  # every acknowledged message once, nothing else
    assert len([s for s in acked if s.startswith("soak")]) == len(node.messages("bob", "INBOX"))
