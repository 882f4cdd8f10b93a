"""More of the command set through imaplib: every SEARCH key, RFC822.* items, sections, LSUB,
LIST-EXTENDED selection options, STATUS items, UID variants, bad arguments."""

from __future__ import annotations

import imaplib

import pytest

from .conftest import PASSWORD, message


def connect(srv) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", srv.port)
    c.login("alice", PASSWORD)
    return c


def raw_cmd(c: imaplib.IMAP4, *args) -> tuple[str, list]:
    tag = c._command(*args)
    return c._command_complete(args[0], tag)


def test_every_search_key(imap):
    m1 = b"From: Ann <ann@example.org>\r\nTo: bob@example.test\r\nCc: cc@example.test\r\nBcc: hidden@example.test\r\nSubject: first\r\nDate: Mon, 02 Feb 2026 10:00:00 +0000\r\n\r\nalpha body\r\n"
    m2 = b"From: Ben <ben@example.org>\r\nTo: carl@example.test\r\nSubject: second\r\nDate: Tue, 10 Mar 2026 10:00:00 +0000\r\n\r\nbeta body\r\n"
    imap.deliver("alice", m1, flags=["\\Answered", "$Work"])
    imap.deliver("alice", m2, flags=["\\Draft", "\\Deleted", "\\Seen"])
    c = connect(imap)
    c.select("INBOX")

    def s(*keys):
        typ, data = c.search(None, *keys)
        assert typ == "OK", data
        return data[0].split()

    expect = {
        ("ANSWERED",): [b"1"],
        ("UNANSWERED",): [b"2"],
        ("DELETED",): [b"2"],
        ("UNDELETED",): [b"1"],
        ("DRAFT",): [b"2"],
        ("UNDRAFT",): [b"1"],
        ("FLAGGED",): [],
        ("UNFLAGGED",): [b"1", b"2"],
        ("KEYWORD", "$Work"): [b"1"],
        ("UNKEYWORD", "$Work"): [b"2"],
        ("SEEN",): [b"2"],
        ("RECENT",): [b"1", b"2"],
        ("NEW",): [b"1"],
        ("OLD",): [],
        ("CC", "cc@"): [b"1"],
        ("BCC", "hidden"): [b"1"],
        ("TO", "carl"): [b"2"],
        ("FROM", "Ben"): [b"2"],
        ("SENTBEFORE", "1-Mar-2026"): [b"1"],
        ("SENTSINCE", "1-Mar-2026"): [b"2"],
        ("SENTON", "2-Feb-2026"): [b"1"],
        ("UID", "2"): [b"2"],
        ("NOT", "UID", "2"): [b"1"],
        ("OR", "DRAFT", "ANSWERED"): [b"1", b"2"],
        ("LARGER", "1"): [b"1", b"2"],
        ("SMALLER", "1"): [],
        ("BODY", "beta"): [b"2"],
        ("TEXT", "first"): [b"1"],
        ("1",): [b"1"],
        ("*",): [b"2"],
        ("(", "SEEN", "DRAFT", ")"): [b"2"],
        ("YOUNGER", "3600"): [b"1", b"2"],
        ("OLDER", "3600"): [],
    }
    for keys, want in expect.items():
        assert s(*keys) == want, keys
    typ, data = c.search(None, "MODSEQ", "1")
    assert data[0].split()[:2] == [b"1", b"2"] and b"(MODSEQ" in data[0]
    for bad in (("BOGUS",), ("SINCE", "yesterday"), ("LARGER", "big"), ("OR", "SEEN")):
        with pytest.raises(imaplib.IMAP4.error):
            c.search(None, *bad)
    c.logout()


def test_rfc822_items_and_sections(imap):
    raw = (
        b"From: a@example.org\r\nSubject: sections\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n"
        b"--X\r\nContent-Type: text/plain\r\n\r\none\r\n--X\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ntw=C3=B6\r\n--X--\r\n"
    )
    imap.deliver("alice", raw)
    c = connect(imap)
    c.select("INBOX")
    head, _, body = raw.partition(b"\r\n\r\n")
    typ, data = c.fetch("1", "(RFC822.HEADER)")
    assert data[0][1] == head + b"\r\n\r\n"
    assert b"\\Seen" not in c.fetch("1", "(FLAGS)")[1][0]
    typ, data = c.fetch("1", "(RFC822.TEXT)")
    assert data[0][1] == body
    assert b"\\Seen" in c.fetch("1", "(FLAGS)")[1][0]
    typ, data = c.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2] BODY.PEEK[3] BODY.PEEK[1]<1.100>)")
    items = {d[0].split(b" ")[-2].lstrip(b"("): d[1] for d in data if isinstance(d, tuple)}
    assert items[b"BODY[1]"] == b"one"
    assert items[b"BODY[2.MIME]"].startswith(b"Content-Type: text/plain\r\nContent-Transfer-Encoding")
    assert items[b"BINARY[2]"] == "twö".encode()
    assert items[b"BODY[1]<1>"] == b"ne"
    assert b"BODY[3] NIL" in b"".join(d if isinstance(d, bytes) else d[0] for d in data)
    typ, data = c.uid("FETCH", "1", "(BODY.PEEK[HEADER] UID)")
    assert data[0][1] == head + b"\r\n\r\n"
    c.logout()


def test_bad_arguments_get_bad_and_session_goes_on(imap):
    imap.deliver("alice", message(1))
    c = connect(imap)
    c.select("INBOX")
    for args in (
        ("FETCH", "1", "(BOGUS)"),
        ("FETCH", "0", "FLAGS"),
        ("FETCH", "5", "FLAGS"),
        ("FETCH", "1", "BODY[0]"),
        ("STORE", "1", "FLAGZ", "(\\Seen)"),
        ("COPY", "1"),
        ("UID", "FROB", "1"),
        ("SELECT",),
        ("LIST", '""'),
        ("STATUS", "INBOX", "(BOGUS)"),
    ):
        with pytest.raises(imaplib.IMAP4.error):
            raw_cmd(c, *args)
    assert c.noop()[0] == "OK"
    c.logout()


def test_list_extended_lsub_and_status_items(imap):
    imap.deliver("alice", message(1))
    c = connect(imap)
    c.create("Team/Alpha")
    c.subscribe("Team/Alpha")
    c.subscribe("Gone")  # subscribed, does not exist
    c.unsubscribe("Junk")
    typ, data = raw_cmd(c, "LIST", "(SUBSCRIBED)", '""', "*")
    lines = c.untagged_responses.pop("LIST", [])
    names = {x.rsplit(b" ", 1)[1]: x for x in lines}
    assert b"Junk" not in names and b"\\Subscribed" in names[b"Team/Alpha"]
    assert b"\\NonExistent" in names[b"Gone"]
    typ, data = raw_cmd(c, "LIST", "(SPECIAL-USE)", '""', "*")
    lines = c.untagged_responses.pop("LIST", [])
    assert sorted(x.rsplit(b" ", 1)[1] for x in lines) == [b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"]
    typ, data = raw_cmd(c, "LIST", '""', "(INBOX Team/*)", "RETURN", "(CHILDREN)")
    lines = c.untagged_responses.pop("LIST", [])
    assert sorted(x.rsplit(b" ", 1)[1] for x in lines) == [b"INBOX", b"Team/Alpha"]
    lsub = [x for x in c.lsub('""', "*")[1] if x]
    assert any(x.endswith(b"Gone") and b"\\Noselect" in x for x in lsub)
    typ, data = c.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT)")
    text = data[0].decode()
    for item in ("MESSAGES 1", "UIDNEXT 2", "UNSEEN 1", "DELETED 0", f"SIZE {len(message(1))}", "APPENDLIMIT"):
        assert item in text
    c.logout()


def test_deleted_parent_lists_as_noselect_and_selected_mailbox_deleted(imap):
    c = connect(imap)
    c.create("Parent/Child")
    assert c.delete("Parent")[0] == "OK"
    lines = {x.rsplit(b" ", 1)[1]: x for x in c.list('""', "*")[1]}
    assert b"\\Noselect" in lines[b"Parent"] and b"\\HasNoChildren" in lines[b"Parent/Child"]
    assert [x.rsplit(b" ", 1)[1] for x in c.list('""', "%")[1]].count(b"Parent") == 1
    # another session deletes the mailbox this one has selected: it is told and logged out
    assert c.select("Parent/Child")[0] == "OK"
    o = connect(imap)
    assert o.delete("Parent/Child")[0] == "OK", "delete"
    o.logout()
    with pytest.raises(imaplib.IMAP4.abort):
        c.noop()
        c.noop()
