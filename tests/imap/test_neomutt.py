"""neomutt (driven in tmux, as a person would use it) reading, flagging, moving and deleting."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import imapclient
import pytest

from .conftest import PASSWORD, message

pytestmark = pytest.mark.skipif(
    shutil.which("neomutt") is None or shutil.which("tmux") is None, reason="neomutt and tmux are needed"
)


class Tmux:
    def __init__(self, command: str):
        self.name = f"mp-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "40", command], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.screen()
            if text in s:
                return s
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared on screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_neomutt_reads_flags_moves_and_deletes(imap, tmp_path):
    for i in range(3):
        imap.deliver("alice", message(i, subject=f"neomutt test {i}"))
    conf = tmp_path / "muttrc"
    conf.write_text(
        f"""set folder="imap://alice@127.0.0.1:{imap.port}/"
set imap_user="alice"
set imap_pass="{PASSWORD}"
set spoolfile="+INBOX"
set ssl_starttls=no
set ssl_force_tls=no
set mail_check=1
set timeout=1
set confirmappend=no
set confirmcreate=no
set delete=yes
set move=no
set sort=date
set wait_key=no
set header_cache=""
set message_cachedir=""
"""
    )
    tm = Tmux(f"HOME={tmp_path} TERM=xterm neomutt -n -F {conf}")
    try:
        tm.wait_for("neomutt test 2")
        tm.keys("Enter")  # read message 1
        tm.wait_for("Hello number 0.")
        tm.keys("q")
        tm.wait_for("Msgs:3")
        tm.keys("j", "F")  # flag message 2
        tm.keys("j", "s")  # save (move) message 3 to Archive
        tm.wait_for("Save to mailbox")
        tm.keys("C-u", "=Archive", "Enter")
        time.sleep(0.5)
        tm.keys("k", "k", "d")  # delete message 1
        tm.keys("$")  # sync: expunge
        tm.wait_for("Msgs:1")
        tm.keys("q")
    finally:
        tm.close()
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=10)
    c.login("alice", PASSWORD)
    c.select_folder("INBOX")
    left = c.fetch(c.search(), ["ENVELOPE", "FLAGS"])
    assert [v[b"ENVELOPE"].subject for v in left.values()] == [b"neomutt test 1"]
    assert b"\\Flagged" in next(iter(left.values()))[b"FLAGS"]
    c.select_folder("Archive")
    moved = c.fetch(c.search(), ["ENVELOPE"])
    assert [v[b"ENVELOPE"].subject for v in moved.values()] == [b"neomutt test 2"]
    c.logout()
