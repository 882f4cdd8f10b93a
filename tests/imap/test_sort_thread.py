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
