"""Debian's swaks as the client, over LMTP (TCP and Unix socket) and SMTP with STARTTLS."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from mailpair.protocols.lmtp import start_lmtp
from tests.helpers.delivery import DOMAIN, DeliveryNode

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (scripts/setup.sh --test)")


def swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["swaks", "--from", "sender@example.org", "--timeout", "20", *args], capture_output=True, text=True, timeout=60
    )


def replies(out: str) -> list[str]:
    """Server reply lines as swaks prints them ("<~ " / "<** " for errors)."""
    return [ln.split(" ", 1)[1].strip() for ln in out.splitlines() if ln.startswith(("<- ", "<** ", "<~ ", "<~* "))]


def test_swaks_lmtp_per_recipient(node):
    node.db.commit("quota_set", name="bob", quota=50)
    r = swaks("--server", "127.0.0.1", "--port", str(node.lmtp.port), "--protocol", "LMTP",
              "--to", f"alice@{DOMAIN},bob@{DOMAIN},carol@{DOMAIN}", "--header", "Subject: swaks lmtp")  # fmt: skip
    out = r.stdout + r.stderr
    rep = replies(out)
    assert any(x.startswith("550 5.1.1 <carol@") for x in rep), out
    after_data = rep[rep.index(next(x for x in rep if x.startswith("354"))) + 1 :]
    assert after_data[0].startswith(f"250 2.0.0 <alice@{DOMAIN}>"), out
    assert after_data[1].startswith(f"552 5.2.2 <bob@{DOMAIN}>"), out
    [raw] = node.messages("alice")
    assert b"Subject: swaks lmtp" in raw and raw.startswith(b"Return-Path: <sender@example.org>")
    assert node.messages("bob") == []


def test_swaks_lmtp_unix_socket(tmp_path):
    n = DeliveryNode(tmp_path / "n")
    path = str(tmp_path / "lmtp.sock")
    lst = n.call(start_lmtp(n.store, replace(n.settings, unix_socket=path)))
    try:
        r = swaks("--socket", path, "--protocol", "LMTP", "--to", f"bob+nofolder@{DOMAIN}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(n.messages("bob")) == 1
    finally:
        n.call(lst.close())
        n.close()


def test_swaks_smtp_starttls_pipelining(node):
    r = swaks("--server", "127.0.0.1", "--port", str(node.smtp.port), "--tls", "--pipeline",
              "--to", f"alice@{DOMAIN}", "--header", "Subject: swaks tls", "--body", "8-bit body: Grüße\n")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    [raw] = node.messages("alice")
    assert b"with ESMTPS id" in raw and b"Subject: swaks tls" in raw
    assert "Grüße".encode() in raw


def test_swaks_smtp_unknown_user_exit_code(node):
    r = swaks("--server", "127.0.0.1", "--port", str(node.smtp.port), "--to", f"nobody@{DOMAIN}")
    assert r.returncode != 0
    assert "550 5.1.1" in r.stdout + r.stderr
    assert node.count() == 0
