"""A soak (run with --slow): many clients doing random work on the same mailboxes at once. Every
command gets an answer, sessions see a consistent mailbox, nothing is left behind."""

from __future__ import annotations

import random
import threading
import time

import imapclient
import pytest

from .conftest import PASSWORD, message

SECONDS = 60


@pytest.mark.slow
def test_concurrent_random_sessions(imap, caplog):
    import logging

    caplog.set_level(logging.ERROR)
    for i in range(50):
        imap.deliver("alice", message(i))
    stop = time.time() + SECONDS
    errors: list[str] = []
    counts = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
            c.login("alice", PASSWORD)
            c.select_folder("INBOX")
            while time.time() < stop:
                uids = c.search()
                op = rng.random()
                pick = rng.sample(uids, min(len(uids), 3)) if uids else []
                if op < 0.3 and pick:
                    c.fetch(pick, ["FLAGS", "ENVELOPE", "BODY.PEEK[]"])
                elif op < 0.5 and pick:
                    c.add_flags(pick, [rng.choice([b"\\Seen", b"\\Flagged", b"$k"])])
                elif op < 0.6 and pick:
                    c.copy(pick, "Archive")
                elif op < 0.7 and pick:
                    c.move(pick[:1], "Trash")
                elif op < 0.8 and pick:
                    c.delete_messages(pick[:1])
                    c.expunge()
                elif op < 0.9:
                    c.append("INBOX", message(rng.randrange(10_000)))
                else:
                    c.noop()
                counts[0] += 1
            c.logout()
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(f"{seed}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]
    assert counts[0] > 500
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login("alice", PASSWORD)
    for box in ("INBOX", "Archive", "Trash"):
        n = c.select_folder(box)[b"EXISTS"]
        assert n == len(c.search()) == c.folder_status(box, ["MESSAGES"])[b"MESSAGES"]
    c.logout()
    deadline = time.time() + 5
    while time.time() < deadline and imap.server.sessions:
        time.sleep(0.05)
    assert not imap.server.sessions and not imap.server.user_connections
