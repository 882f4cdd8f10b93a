"""SORT and THREAD (RFC 5256) through imapclient."""

from __future__ import annotations

import imapclient

from .conftest import PASSWORD


def mail(mid: str, subject: str, date: str, frm: str, size_pad: int = 0, refs: str = "") -> bytes:
    extra = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
    return (
        f"From: {frm}\r\nTo: x@example.test\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {mid}\r\n{extra}\r\n"
        + "body\r\n"
        + "x" * size_pad
    ).encode()


def test_sort_and_thread(imap):
    imap.deliver("alice", mail("<a@x>", "Lunch", "Mon, 02 Feb 2026 10:00:00 +0000", "zed@example.org", 10))
    imap.deliver("alice", mail("<b@x>", "Re: Lunch", "Mon, 02 Feb 2026 11:00:00 +0000", "amy@example.org", 500, "<a@x>"))
    imap.deliver("alice", mail("<c@x>", "Budget", "Sun, 01 Feb 2026 09:00:00 +0000", "max@example.org", 100))
    imap.deliver(
        "alice", mail("<d@x>", "Re: [list] Fwd: lunch", "Tue, 03 Feb 2026 09:00:00 +0000", "bob@example.org", 0, "<a@x> <b@x>")
    )
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=10)
    c.login("alice", PASSWORD)
    c.select_folder("INBOX")
    assert c.sort(["DATE"]) == [3, 1, 2, 4]
    assert c.sort(["REVERSE", "SIZE"]) == [2, 3, 4, 1]  # 4 has References headers, so it is larger than 1
    assert c.sort(["FROM"]) == [2, 4, 3, 1]
    assert c.sort(["SUBJECT", "DATE"]) == [3, 1, 2, 4]
    assert c.sort(["ARRIVAL"], ["SUBJECT", "lunch"]) == [1, 2, 4]
    assert c.thread("REFERENCES") == ((3,), (1, 2, 4))
    assert c.thread("ORDEREDSUBJECT") == ((3,), (1, (2,), (4,)))
    c.logout()


def test_thread_references_dummies_and_subject_merging(imap):
    day = "Mon, 0{} Feb 2026 10:00:00 +0000"
    msgs = [
        mail("<a@x>", "Lunch", day.format(2), "a@x"),
        mail("<b@x>", "Re: Lunch", day.format(3), "b@x", refs="<a@x>"),
        mail("<c@x>", "Budget", day.format(1), "c@x"),
        mail("<d@x>", "Re: [list] Fwd: lunch", day.format(4), "d@x", refs="<a@x> <b@x>"),
        mail("<e@x>", "Re: party", day.format(5), "e@x", refs="<missing@x>"),
        mail("<f@x>", "Re: party", day.format(6), "f@x", refs="<missing@x>"),
        mail("<g@x>", "Budget", day.format(7), "g@x"),
        mail("<h@x>", "Re: Budget", day.format(8), "h@x"),
    ]
    for m in msgs:
        imap.deliver("alice", m)
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=10)
    c.login("alice", PASSWORD)
    c.select_folder("INBOX")
    typ, data = c._imap._simple_command("THREAD", "REFERENCES", "UTF-8", "ALL")
    assert typ == "OK"
    # missing parent of 5 and 6: a dummy root; 3 and 7 share a subject, neither a reply: a dummy
    # holds both, and 8 ("Re: Budget", no references) joins it
    assert c._imap.untagged_responses["THREAD"] == [b"((3)(7)(8))(1 2 4)((5)(6))"]
    c.logout()
