"""Fixtures of the backup tests: a real pair made by `mailpair pair up`, mail delivered over
LMTP from mailmix, changes made over IMAP, and the CLI run as a process, as an admin would."""

from __future__ import annotations

import imaplib
import json
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailpair import mailmix
from tests.helpers import pair as pairutil


class MailPair:
    def __init__(self, root: Path):
        self.root = root
        self.info = pairutil.pair_up(root, users=2)
        self.domain = self.info["domain"]
        self.password = self.info["users"][0]["password"]

    def node(self, role: str) -> dict:
        name = self._name_of(role)
        return next(n for n in self.info["nodes"] if n["name"] == name)

    def _name_of(self, role: str) -> str:
        return next(n["name"] for n in pairutil.status(self.root)["nodes"] if n["role"] == role and n["reachable"])

    def deliver(self, user: str, sizes: list[int], seed: int) -> list[bytes]:
        """Deliver mailmix messages over LMTP to the active; returns them."""
        active = self.node("active")
        out = []
        with smtplib.LMTP("127.0.0.1", active["lmtp"]) as lmtp:
            for i, size in enumerate(sizes):
                raw = mailmix.message(size, seed=seed + i, to=f"{user}@{self.domain}")
                lmtp.sendmail("sender@example.org", [f"{user}@{self.domain}"], raw)
                out.append(raw)
        return out

    def imap(self, user: str) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.node("active")["imap"])
        c.login(user, self.password)
        return c

    def copies(self) -> list[dict]:
        st = pairutil.status(self.root)
        return [c for d in st["databases"] for c in d["copies"]]

    def caught_up(self, timeout: float = 60) -> int:
        """Wait until the passive has replayed everything the active wrote; that LSN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            copies = self.copies()
            mounted = [c for c in copies if c["status"] == "Mounted"]
            passive = [c for c in copies if c["status"] != "Mounted"]
            if (
                mounted
                and passive
                and passive[0]["replayed_lsn"] == mounted[0]["stored_lsn"]
                and passive[0]["status"] == "Healthy"
            ):
                return passive[0]["replayed_lsn"]
            time.sleep(0.2)
        raise AssertionError(f"the passive did not catch up: {copies}")

    def cli(self, *args: str, check: bool = True):
        return pairutil.mailpair(*args, check=check)

    def backup(self, kind: str, target: Path, *extra: str) -> dict:
        r = self.cli("backup", kind, "--dir", str(self.root), "--to", str(target), "--json", *extra)
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def mail_pair(tmp_path_factory) -> Iterator[MailPair]:
    root = tmp_path_factory.mktemp("pair")
    p = MailPair(root)
    try:
        yield p
    finally:
        pairutil.pair_down(root)


def list_backups(target: Path) -> list[dict]:
    return json.loads(pairutil.mailpair("backup", "list", "--to", str(target), "--json").stdout)["backups"]


def verify(target: Path):
    return pairutil.mailpair("backup", "verify", "--to", str(target), check=False)


def digest(data: Path) -> dict:
    return json.loads(pairutil.mailpair("db", "digest", str(data)).stdout)["databases"][0]
