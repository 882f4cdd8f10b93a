"""Real mail clients from Debian against the server: curl (imap://), mbsync (isync) syncing an
account to a Maildir and back, both ways."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import imapclient
import pytest

from .conftest import PASSWORD, message


def _client(srv) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
    c.login("alice", PASSWORD)
    return c


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_fetches_a_message_and_lists(imap):
    imap.deliver("alice", message(1, subject="via curl"))
    url = f"imap://127.0.0.1:{imap.port}"
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-u", f"alice:{PASSWORD}", f"{url}/INBOX;UID=1"],
        capture_output=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == message(1, subject="via curl")
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", f"alice:{PASSWORD}", f"{url}/"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b'"/" Sent' in r.stdout and b"INBOX" in r.stdout
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-u", f"alice:{PASSWORD}", f"{url}/INBOX", "-X", "SEARCH SUBJECT curl"],
        capture_output=True,
        timeout=30,
    )
    assert r.stdout.strip() == b"* SEARCH 1", r.stdout


def _mbsync(tmp: Path, port: int) -> subprocess.CompletedProcess:
    mail = tmp / "Maildir"
    mail.mkdir(exist_ok=True)
    conf = tmp / "mbsyncrc"
    conf.write_text(
        f"""IMAPAccount acc
Host 127.0.0.1
Port {port}
User alice
Pass {PASSWORD}
SSLType None
AuthMechs PLAIN

IMAPStore remote
Account acc

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=120, env=env)


def _maildir_files(box: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (box / sub).glob("*") if p.is_file())


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed")
def test_mbsync_both_ways(imap, tmp_path):
    for i in range(5):
        imap.deliver("alice", message(i))
    c = _client(imap)
    c.create_folder("Lists/python")
    c.append("Lists/python", message(50, subject="list mail"))
    c.logout()
    # server -> Maildir
    r = _mbsync(tmp_path, imap.port)
    assert r.returncode == 0, r.stdout + r.stderr
    inbox = tmp_path / "Maildir" / "INBOX"
    files = _maildir_files(inbox)
    assert len(files) == 5
    # mbsync stores LF line ends and adds its own X-TUID header; the rest is what was delivered
    local = sorted(b"".join(x for x in f.read_bytes().splitlines(True) if not x.startswith(b"X-TUID")) for f in files)
    assert local == sorted(message(i).replace(b"\r\n", b"\n") for i in range(5))
    assert len(_maildir_files(tmp_path / "Maildir" / "Lists" / "python")) == 1
    # Maildir -> server: a new message, a flag change and a deletion made locally
    (inbox / "new" / "1700000000.local1.host").write_bytes(message(99, subject="written offline"))
    first = files[0]
    os.rename(first, str(first).split(":2,")[0] + ":2,FS")  # flagged + seen
    os.unlink(files[1])
    r = _mbsync(tmp_path, imap.port)
    assert r.returncode == 0, r.stdout + r.stderr
    c = _client(imap)
    c.select_folder("INBOX")
    uids = c.search()
    assert len(uids) == 5  # 5 - 1 deleted + 1 new
    subjects = [v[b"ENVELOPE"].subject for v in c.fetch(uids, ["ENVELOPE"]).values()]
    assert b"written offline" in subjects
    flagged = c.search(["FLAGGED"])
    assert len(flagged) == 1 and b"\\Seen" in c.get_flags(flagged)[flagged[0]]
    # server-side change flows back to the Maildir
    c.add_flags([uids[-1]], [b"\\Answered"])
    c.logout()
    r = _mbsync(tmp_path, imap.port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(":2," in p.name and "R" in p.name.split(":2,")[1] for p in _maildir_files(inbox))


def _offlineimap(tmp: Path, port: int) -> subprocess.CompletedProcess:
    conf = tmp / "offlineimaprc"
    conf.write_text(
        f"""[general]
accounts = acc
metadata = {tmp}/meta

[Account acc]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp}/oimail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {port}
remoteuser = alice
remotepass = {PASSWORD}
ssl = no
starttls = no
"""
    )
    env = {**os.environ, "HOME": str(tmp)}
    return subprocess.run(
        ["offlineimap", "-c", str(conf), "-o", "-u", "basic"], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 is not installed")
def test_offlineimap_both_ways(imap, tmp_path):
    for i in range(4):
        imap.deliver("alice", message(i))
    r = _offlineimap(tmp_path, imap.port)
    assert r.returncode == 0, r.stdout + r.stderr
    inbox = tmp_path / "oimail" / "INBOX"
    files = _maildir_files(inbox)
    assert len(files) == 4
    # local changes: flag one, delete one, add one
    os.rename(files[0], str(files[0]).rsplit(":2,", 1)[0] + ":2,F")
    os.unlink(files[1])
    (inbox / "new" / "1700000001.oi.host").write_bytes(message(77, subject="from offlineimap"))
    r = _offlineimap(tmp_path, imap.port)
    assert r.returncode == 0, r.stdout + r.stderr
    c = _client(imap)
    c.select_folder("INBOX")
    subjects = sorted(v[b"ENVELOPE"].subject for v in c.fetch(c.search(), ["ENVELOPE"]).values())
    assert len(subjects) == 4 and b"from offlineimap" in subjects
    assert len(c.search(["FLAGGED"])) == 1
    c.logout()
