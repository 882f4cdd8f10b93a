"""Helpers for store tests: messages with a recognisable Message-ID, and quick store setup."""

from __future__ import annotations

import time
from pathlib import Path

from mailpair.store import DatabaseConfig, NodeStore, prepare_message

FAST_HASH = "$scrypt$ln=1,r=8,p=1$c2FsdA$eA"  # tests that never log in need no real hash


def message(n: int, size: int = 4096, to: str = "alice@example.test") -> bytes:
    head = (
        f"From: Sender {n} <sender{n}@example.org>\r\nTo: {to}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


def open_store(path: Path, **config) -> NodeStore:
    return NodeStore(path, DatabaseConfig(**config)).open()


def deliver(db, user: str, n: int, size: int = 4096, folder=None) -> dict:
    return db.commit("deliver", recipients=[(user, folder)], date=time.time_ns() // 1000, **prepare_message(message(n, size)))
