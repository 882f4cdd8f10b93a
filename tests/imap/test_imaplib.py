"""Python's imaplib against the server: the IMAP4rev1 command set as a client uses it."""

from __future__ import annotations

import imaplib
import re

import pytest

from .conftest import PASSWORD, message


def no(result, code: str = "") -> None:
    """imaplib returns NO answers (it raises only on BAD)."""
    typ, data = result
    assert typ == "NO", (typ, data)
    assert code in b" ".join(d for d in data if isinstance(d, bytes)).decode(), data


def connect(srv, user="alice") -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", srv.port)
    c.login(user, PASSWORD)
    return c


def test_login_wrong_password_and_unknown_user(imap):
    c = imaplib.IMAP4("127.0.0.1", imap.port)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login("alice", "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login("nobody", PASSWORD)
    assert c.login("alice", PASSWORD)[0] == "OK"
    c.logout()


def test_authenticate_plain(imap):
    c = imaplib.IMAP4("127.0.0.1", imap.port)
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0alice\0{PASSWORD}".encode())
    assert typ == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_commands_before_login_are_refused(imap):
    c = imaplib.IMAP4("127.0.0.1", imap.port)
    c.state = "AUTH"  # imaplib checks states itself; send the command anyway
    with pytest.raises(imaplib.IMAP4.error, match="log in first"):
        c.select("INBOX")
    c.logout()


def test_list_special_use_and_children(imap):
    c = connect(imap)
    c.create("Projects/2026/Q1")
    typ, lines = c.list()
    listing = {line.decode().rsplit(" ", 1)[1]: line.decode() for line in lines}
    assert "\\Sent" in listing["Sent"] and "\\Trash" in listing["Trash"] and "\\Drafts" in listing["Drafts"]
    assert "\\Junk" in listing["Junk"] and "\\Archive" in listing["Archive"]
    assert "\\HasChildren" in listing["Projects"] and "\\HasNoChildren" in listing["Projects/2026/Q1"]
    typ, lines = c.list('""', "Projects/%")
    assert [x.decode().rsplit(" ", 1)[1] for x in lines] == ["Projects/2026"]
    typ, lines = c.list('""', "inbox")
    assert lines[0].endswith(b"INBOX")
    typ, lines = c.list('""', "inb*")
    assert [x.rsplit(b" ", 1)[1] for x in lines] == [b"INBOX"]
    c.logout()


def test_select_fetch_items_and_flags(imap):
    for i in range(3):
        imap.deliver("alice", message(i))
    c = connect(imap)
    typ, data = c.select("INBOX")
    assert data == [b"3"]
    typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert len(data) == 3
    assert b'"message 0"' in data[0] and b'(("Bob Sender" NIL "bob" "example.test"))' in data[0]
    size = int(re.search(rb"RFC822.SIZE (\d+)", data[0]).group(1))
    assert size == len(message(0))
    typ, data = c.fetch("2", "(BODY.PEEK[TEXT])")
    assert data[0][1] == b"Hello number 1.\r\nSecond line.\r\n"
    typ, data = c.fetch("2", "(FLAGS)")
    assert b"\\Seen" not in data[0]  # PEEK leaves it unseen
    typ, data = c.fetch("2", "(RFC822)")
    assert data[0][1] == message(1)
    assert b"\\Seen" in c.fetch("2", "(FLAGS)")[1][0]  # RFC822 sets \Seen
    typ, data = c.fetch("1", "(BODY[]<5.10>)")
    assert data[0][1] == message(0)[5:15]
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert data[0][1] == b"From: Bob Sender <bob@example.test>\r\nSubject: message 0\r\n\r\n"
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM DATE MESSAGE-ID)])")
    assert data[0][1] == b"To: alice@example.test\r\n\r\n"
    c.logout()


def test_store_variants_and_keywords(imap):
    for i in range(3):
        imap.deliver("alice", message(i))
    c = connect(imap)
    c.select("INBOX")
    typ, data = c.store("1:2", "+FLAGS", "(\\Flagged $Important)")
    assert all(b"\\Flagged" in d and b"$Important" in d for d in data)
    typ, data = c.store("1", "-FLAGS.SILENT", "($Important)")
    assert data == [None]
    typ, data = c.store("3", "FLAGS", "(\\Answered \\Draft)")
    assert b"(\\Answered \\Draft)" in data[0]
    flags = c.fetch("1:3", "(FLAGS)")[1]
    assert b"\\Flagged" in flags[0] and b"$Important" not in flags[0] and b"$Important" in flags[1]
    no(c.store("1", "+FLAGS", "(\\Bogus)"))
    c.logout()
    # keywords survive a new session and show in FLAGS/PERMANENTFLAGS
    c = connect(imap)
    c.select("INBOX")
    assert b"$Important" in c.response("FLAGS")[1][0]
    c.logout()


def test_search_keys(imap):
    imap.deliver("alice", message(1, subject="Invoice March", body="Total: 100 EUR\r\n"))
    imap.deliver("alice", message(2, subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=", body="hallo\r\n"))
    imap.deliver("alice", message(3, subject="Big one", body="x" * 5000 + "\r\n"), flags=["\\Seen"])
    c = connect(imap)
    c.select("INBOX")

    def s(*criteria):
        return c.search(None, *criteria)[1][0].split()

    assert s("ALL") == [b"1", b"2", b"3"]
    assert s("SUBJECT", "invoice") == [b"1"]
    assert s("BODY", "EUR") == [b"1"]
    assert s("TEXT", "hallo") == [b"2"]
    assert s("LARGER", "4000") == [b"3"]
    assert s("SMALLER", "4000") == [b"1", b"2"]
    assert s("SEEN") == [b"3"] and s("UNSEEN") == [b"1", b"2"]
    assert s("NOT", "SEEN", "OR", "SUBJECT", "big", "SUBJECT", "invoice") == [b"1"]
    assert s("FROM", "bob@example.test") == [b"1", b"2", b"3"]
    assert s("HEADER", "Message-ID", "<m2@") == [b"2"]
    assert s("SINCE", "1-Jan-2020") == [b"1", b"2", b"3"]
    assert s("BEFORE", "1-Jan-2020") == []
    assert s("SENTON", "28-Nov-2026") == [b"1", b"2", b"3"]
    assert s("2:3", "UNSEEN") == [b"2"]
    assert c.uid("SEARCH", None, "UID", "2:*")[1][0].split() == [b"2", b"3"]
    typ, data = c.search("UTF-8", "SUBJECT", '"Grüße"'.encode())
    assert data[0].split() == [b"2"]
    no(c.search("KOI8-R", "ALL"), "BADCHARSET")
    c.logout()


def test_copy_move_expunge_uidplus(imap):
    for i in range(4):
        imap.deliver("alice", message(i))
    c = connect(imap)
    c.select("INBOX")
    typ, data = c.copy("1:2", "Archive")
    assert re.search(rb"COPYUID \d+ 1:2|COPYUID \d+ 1,2 1,2", data[0])
    typ, data = c._simple_command("MOVE", "3", "Trash")
    assert typ == "OK"
    assert c.response("EXPUNGE")[1] == [b"3"]
    no(c.copy("1", "Nowhere"), "TRYCREATE")
    c.store("1", "+FLAGS", "\\Deleted")
    c.store("2", "+FLAGS", "\\Deleted")
    typ, data = c.uid("EXPUNGE", "2")
    assert typ == "OK"
    assert c.response("EXPUNGE")[1] == [b"2"]
    assert c.select("INBOX")[1] == [b"2"]  # uid 1 (still \Deleted) and 4 remain
    typ, data = c.expunge()
    assert data == [b"1"]
    assert c.status("Trash", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 1)")
    assert c.status("Archive", "(MESSAGES UIDNEXT)")[1][0].endswith(b"(MESSAGES 2 UIDNEXT 3)")
    c.logout()


def test_append_with_flags_and_date_then_close_expunges(imap):
    c = connect(imap)
    typ, data = c.append("Drafts", "(\\Draft \\Deleted)", '"01-Feb-2026 12:00:00 +0100"', message(7))
    assert b"APPENDUID" in data[0]
    c.select("Drafts")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE)")
    assert b'INTERNALDATE " 1-Feb-2026 11:00:00 +0000"' in data[0]
    assert b"\\Draft" in data[0]
    c.close()
    assert c.status("Drafts", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 0)")
    no(c.append("Missing", None, None, message(1)), "TRYCREATE")
    c.logout()


def test_examine_is_read_only(imap):
    imap.deliver("alice", message(1))
    c = connect(imap)
    typ, _ = c.select("INBOX", readonly=True)
    assert typ == "OK"
    no(c.store("1", "+FLAGS", "\\Seen"), "READ-ONLY")
    c.fetch("1", "(BODY[])")
    assert b"\\Seen" not in c.fetch("1", "(FLAGS)")[1][0]
    c.logout()


def test_create_rename_delete_subscribe(imap):
    c = connect(imap)
    assert c.create("Work")[0] == "OK"
    no(c.create("Work"), "ALREADYEXISTS")
    c.create("Work/Old")
    assert c.rename("Work", "Job")[0] == "OK"
    names = [x.decode().rsplit(" ", 1)[1] for x in c.list()[1]]
    assert "Job" in names and "Job/Old" in names and "Work" not in names
    c.subscribe("Job")
    assert any(x.endswith(b"Job") for x in c.lsub()[1])
    c.unsubscribe("Job")
    assert not any(x.endswith(b"Job") for x in c.lsub()[1] if x)
    assert c.delete("Job/Old")[0] == "OK"
    no(c.delete("INBOX"))
    no(c.select("Job/Old"), "NONEXISTENT")
    c.logout()


def test_rename_inbox_moves_messages(imap):
    imap.deliver("alice", message(1))
    c = connect(imap)
    assert c.rename("INBOX", "Old-Inbox")[0] == "OK"
    assert c.select("INBOX")[1] == [b"0"]
    assert c.select("Old-Inbox")[1] == [b"1"]
    c.logout()


def test_international_mailbox_names(imap):
    c = connect(imap)
    assert c.create("&AMk-t&AOk-")[0] == "OK"  # "Été" in modified UTF-7
    assert any(x.endswith(b"&AMk-t&AOk-") for x in c.list()[1])
    assert c.select("&AMk-t&AOk-")[0] == "OK"
    # Well-formed syntax, but no mailbox can have that name (RFC 3501 5.1.3): NO, not BAD.
    typ, data = c.create("bad&AP")
    assert typ == "NO" and b"unterminated" in data[0]
    c.logout()


def test_quota_and_namespace(imap):
    imap.add_user("carol", quota=10_000)
    c = connect(imap, "carol")
    typ, data = c.getquotaroot("INBOX")
    assert data[1] == [b'"" (STORAGE 0 9)']
    c.append("INBOX", None, None, b"Subject: x\r\n\r\n" + b"y" * 9000)
    no(c.append("INBOX", None, None, b"Subject: x\r\n\r\n" + b"y" * 2000), "OVERQUOTA")
    assert c.namespace()[1] == [b'(("" "/")) NIL NIL']
    c.logout()
