"""A delivery acknowledged over LMTP survives SIGKILL of the node process right after the 250:
a real `mailpair node run` process, a raw LMTP client, kill -9, then the store reopened."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path

from mailpair.store import NodeStore
from tests.helpers.delivery import lmtp_session, message, start_node, stuff
from tests.helpers.threads import run_workers


def stored_subjects(data: Path) -> list[str]:
    store = NodeStore(data).open()
    try:
        rows = store.default_database().read_sync(lambda c: c.execute("SELECT raw FROM blobs").fetchall())
    finally:
        store.close()
    out = []
    for (raw,) in rows:
        for line in bytes(raw).split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
                break
    return out


def test_acknowledged_delivery_survives_sigkill_after_250(tmp_path):
    data = tmp_path / "node"
    for round_ in range(3):
        proc, state = start_node(data)
        try:
            c = lmtp_session(state["ports"]["lmtp"])
            c.cmd("MAIL FROM:<s@example.org>")
            c.cmd("RCPT TO:<alice@example.test>")
            c.cmd("RCPT TO:<bob@example.test>")
            c.cmd("DATA")
            c.send(stuff(message(f"killed-{round_}", size=4096)))
            first = c.line()
            os.kill(proc.pid, signal.SIGKILL)  # at once: not even the second reply is awaited
            assert first.startswith("250 2.0.0 <alice@example.test>")
        finally:
            proc.kill()
            proc.wait(10)
        subjects = stored_subjects(data)
        assert f"killed-{round_}" in subjects
    # the store reopens cleanly and the node serves again from the same data
    proc, state = start_node(data)
    try:
        c = lmtp_session(state["ports"]["lmtp"])
        c.cmd("MAIL FROM:<s@example.org>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        c.send(stuff(message("after")))
        assert c.line().startswith("250")
        c.cmd("QUIT")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert sorted(stored_subjects(data)) == ["after", "killed-0", "killed-1", "killed-2"]


def test_every_acknowledged_delivery_survives_sigkill_under_load(tmp_path):
    data = tmp_path / "node"
    proc, state = start_node(data)
    port = state["ports"]["lmtp"]
    acked: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        try:
            c = lmtp_session(port)
            i = 0
            while not stop.is_set():
                subject = f"load-{k}-{i}"
                c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
                assert [c.line()[:3] for _ in range(4)] == ["250", "250", "250", "354"]
                c.send(stuff(message(subject, size=4096)))
                if c.line().startswith("250") and c.line().startswith("250"):
                    acked.append(subject)
                i += 1
        except (ConnectionError, OSError, AssertionError):
            pass  # the server died under us

    def kill_the_node() -> None:
        try:
            time.sleep(1.5)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            stop.set()
            proc.kill()
            proc.wait(10)

    run_workers([functools.partial(client, k) for k in range(8)], timeout=10, during=kill_the_node)
    print(f"{len(acked)} acknowledged before SIGKILL")
    assert len(acked) > 20
    stored = set(stored_subjects(data))
    missing = [s for s in acked if s not in stored]
    assert missing == [], f"{len(missing)} acknowledged deliveries lost"


def test_node_lmtp_on_unix_socket(tmp_path):
    """A node configured with lmtp_socket takes LMTP there too, and removes the socket on stop."""
    import smtplib

    data = tmp_path / "node"
    path = tmp_path / "lmtp.sock"
    proc, state = start_node(data, lmtp_socket=str(path))
    try:
        with smtplib.LMTP(str(path)) as lm:  # smtplib reads one DATA reply: one recipient
            assert lm.sendmail("s@example.org", ["alice@example.test"], message("socket")) == {}
        c = lmtp_session(path=str(path))
        c.cmd("MAIL FROM:<s@example.org>")
        c.cmd("RCPT TO:<alice>")
        c.cmd("RCPT TO:<bob>")
        c.cmd("DATA")
        c.send(stuff(message("socket2")))
        assert c.line().startswith("250 2.0.0 <alice>") and c.line().startswith("250 2.0.0 <bob>")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert not path.exists()
    assert sorted(stored_subjects(data)) == ["socket", "socket2"]  # one blob for both recipients
