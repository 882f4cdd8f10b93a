"""The day a mail admin needs backups for: mail comes in, backups are taken from the passive,
"a virus" deletes a folder and expunges the inbox, and a restore to a time before it brings the
mail back, while a restore to the end shows it gone."""

from __future__ import annotations

import email
import mailbox
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from mailpair import mailmix
from tests.backup.conftest import digest, list_backups, verify

KiB, MiB = 1024, 1024 * 1024


def messages(data: Path, user: str, folder: str) -> list[bytes]:
    """The messages of a folder in a (recovery) data directory, read from its state file."""
    conn = sqlite3.connect(f"file:{data / 'databases' / 'mail' / 'state.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT b.raw FROM messages m JOIN mailboxes x ON x.id=m.mailbox_id JOIN blobs b ON b.id=m.blob_id"
            " WHERE x.account=? AND x.name=? ORDER BY m.uid",
            (user, folder),
        ).fetchall()
        names = {r[0] for r in conn.execute("SELECT name FROM mailboxes WHERE account=?", (user,))}
    finally:
        conn.close()
    if folder not in names:
        raise LookupError(folder)
    return [bytes(r[0]) for r in rows]


def test_restore_before_the_damage_brings_the_folder_back(mail_pair, tmp_path):
    p = mail_pair
    target = tmp_path / "backups"
    # Monday: mail comes in, some over 64 KiB and one of a few MiB; a folder is filed.
    inbox = p.deliver("user1", mailmix.sizes(12, seed=1, max_bytes=2 * MiB) + [70 * KiB, 3 * MiB], seed=100)
    imap = p.imap("user1")
    assert imap.create("Projects")[0] == "OK"
    assert imap.select("INBOX")[0] == "OK"
    assert imap.copy("1:5", "Projects")[0] == "OK"
    imap.logout()
    p.caught_up()
    full = p.backup("full", target)
    assert full["kind"] == "full" and full["node"] == p._name_of("passive")
    assert set(full) >= {"id", "kind", "node", "first_lsn", "last_lsn", "bytes", "seconds"}
    # Tuesday: more mail, an incremental.
    inbox += p.deliver("user1", [300 * KiB, 5 * KiB, 90 * KiB], seed=200)
    p.caught_up()
    inc = p.backup("incremental", target)
    assert inc["first_lsn"] == full["last_lsn"] + 1 and inc["last_lsn"] > inc["first_lsn"]
    good = digest(Path(p.node("passive")["data"]))
    projects = messages(Path(p.node("passive")["data"]), "user1", "Projects")
    assert len(projects) == 5
    live_inbox = messages(Path(p.node("passive")["data"]), "user1", "INBOX")
    assert all(any(m.endswith(raw) for m in live_inbox) for raw in inbox)  # delivery may add trace headers
    time.sleep(0.3)
    before_damage = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    time.sleep(0.3)
    # Wednesday: "a virus" deletes the folder and expunges the inbox; the pair replays it too.
    imap = p.imap("user1")
    assert imap.delete("Projects")[0] == "OK"
    imap.select("INBOX")
    imap.store("1:*", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()
    p.caught_up()
    after = p.backup("incremental", target)
    assert after["first_lsn"] == inc["last_lsn"] + 1
    assert [b["id"] for b in list_backups(target)] == [full["id"], inc["id"], after["id"]]
    assert verify(target).returncode == 0

    # Restore to just before the damage: the folder and its messages are back, byte for byte.
    r = p.cli("restore", "--from", str(target), "--until", before_damage, "--to", str(tmp_path / "before"), "--json")
    assert '"applied_lsn"' in r.stdout
    restored = digest(tmp_path / "before")
    assert restored["digest"] == good["digest"] and restored["applied_lsn"] == good["applied_lsn"]
    assert messages(tmp_path / "before", "user1", "Projects") == projects
    assert messages(tmp_path / "before", "user1", "INBOX") == live_inbox
    assert p.cli("verify", str(tmp_path / "before")).returncode == 0
    # The recovered folder goes out as mbox and Maildir, which Python's mailbox module reads back.
    for fmt, opener in (
        ("mbox", lambda d: mailbox.mbox(d / "Projects.mbox")),
        ("maildir", lambda d: mailbox.Maildir(d / "Projects")),
    ):
        out = tmp_path / f"export-{fmt}"
        p.cli(
            "recover",
            "--from",
            str(tmp_path / "before"),
            "--user",
            "user1",
            "--folder",
            "Projects",
            "--export",
            str(out),
            "--format",
            fmt,
        )
        box = opener(out)
        got = sorted(m.get("Message-ID") for m in box)
        assert got == sorted(email.message_from_bytes(raw).get("Message-ID") for raw in projects) and len(got) == 5
        if fmt == "maildir":  # each message as it was, in the local (LF) line ending files use
            assert sorted(box.get_bytes(k) for k in box.keys()) == sorted(raw.replace(b"\r\n", b"\n") for raw in projects)

    # Restore to the end: the damage is there too, as on the live pair.
    p.cli("restore", "--from", str(target), "--to", str(tmp_path / "end"))
    end = digest(tmp_path / "end")
    assert end["digest"] == digest(Path(p.node("passive")["data"]))["digest"]
    assert messages(tmp_path / "end", "user1", "INBOX") == []
    try:
        messages(tmp_path / "end", "user1", "Projects")
        raise AssertionError("the deleted folder is in the restore to the end")
    except LookupError:
        pass

    # Restore to an LSN: exactly there.
    p.cli("restore", "--from", str(target), "--lsn", str(inc["first_lsn"]), "--to", str(tmp_path / "lsn"))
    assert digest(tmp_path / "lsn")["applied_lsn"] == inc["first_lsn"]
    # A restore never writes over a database.
    again = p.cli("restore", "--from", str(target), "--to", str(tmp_path / "end"), check=False)
    assert again.returncode != 0 and "exists" in again.stderr
