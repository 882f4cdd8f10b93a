"""imapclient against the server: extensions (CONDSTORE/QRESYNC, ENABLE, ESEARCH, SEARCHRES,
MOVE, UIDPLUS, SPECIAL-USE, LIST-STATUS, ID, NAMESPACE, BINARY, UTF8=ACCEPT), untagged updates
across sessions and IDLE."""

from __future__ import annotations

import threading
import time

import imapclient
import imapclient.imapclient
import pytest

from .conftest import PASSWORD, message


def client(srv, user="alice") -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
    c.login(user, PASSWORD)
    return c


def test_capabilities_id_namespace_special_use(imap):
    c = client(imap)
    caps = c.capabilities()
    for cap in (b"IDLE", b"CONDSTORE", b"QRESYNC", b"MOVE", b"UIDPLUS", b"SPECIAL-USE", b"ESEARCH", b"BINARY"):
        assert cap in caps
    assert b"mailpair" in repr(c.id_({"name": "pytest"})).encode()
    ns = c.namespace()
    assert ns.personal == (("", "/"),)
    assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
    assert c.find_special_folder(imapclient.imapclient.TRASH) == "Trash"
    c.logout()


def test_fetch_structure_and_binary(imap):
    raw = (
        b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAQID/w==\r\n--B--\r\n"
    )
    imap.deliver("alice", raw)
    c = client(imap)
    c.select_folder("INBOX")
    r = c.fetch([1], ["BODYSTRUCTURE", "BODY.PEEK[1]", "BODY.PEEK[2.MIME]", "BINARY.PEEK[2]", "BINARY.SIZE[2]"])[1]
    bs = r[b"BODYSTRUCTURE"]
    assert bs.is_multipart and bs[1] == b"mixed".upper()
    assert r[b"BODY[1]"] == b"hello"
    assert r[b"BODY[2.MIME]"].startswith(b"Content-Type: application/octet-stream")
    assert r[b"BINARY[2]"] == b"\x01\x02\x03\xff"
    assert r[b"BINARY.SIZE[2]"] == 4
    c.logout()


def test_condstore_and_qresync_resync(imap):
    for i in range(5):
        imap.deliver("alice", message(i))
    c = client(imap)
    assert set(c.enable("QRESYNC")) >= {b"QRESYNC"}
    info = c.select_folder("INBOX")
    hms = info[b"HIGHESTMODSEQ"]
    uv = info[b"UIDVALIDITY"]
    # another client changes flags and expunges
    o = client(imap)
    o.select_folder("INBOX")
    o.add_flags([2], [b"\\Flagged"])
    o.delete_messages([4])
    o.expunge()
    o.logout()
    changed = c.fetch([1, 2, 3, 4, 5], ["FLAGS"], modifiers=[f"CHANGEDSINCE {hms}"])
    assert set(changed) == {2}
    assert changed[2][b"MODSEQ"][0] > hms
    c.unselect_folder()
    # resync with QRESYNC: VANISHED (EARLIER) plus the changed flags in one SELECT
    tag = c._imap._command("SELECT", "INBOX", f"(QRESYNC ({uv} {hms}))")
    typ, data = c._imap._command_complete("SELECT", tag)
    assert typ == "OK"
    vanished = c._imap.untagged_responses.get("VANISHED", [])
    assert vanished == [b"(EARLIER) 4"]
    c.logout()


def test_conditional_store_reports_modified(imap):
    imap.deliver("alice", message(1))
    imap.deliver("alice", message(2))
    c = client(imap)
    c.select_folder("INBOX")
    ms = c.fetch([1, 2], ["MODSEQ"])
    old = ms[1][b"MODSEQ"][0]
    c.add_flags([2], [b"$seen-elsewhere"])
    typ, data = c._imap.uid("STORE", "1:2", f"(UNCHANGEDSINCE {old})", "+FLAGS", "(\\Seen)")
    assert typ == "OK" and c._imap.untagged_responses["MODIFIED"] == [b"2"]
    flags = c.get_flags([1, 2])
    assert b"\\Seen" in flags[1] and b"\\Seen" not in flags[2]
    c.logout()


def test_esearch_and_searchres(imap):
    for i in range(6):
        imap.deliver("alice", message(i), flags=["\\Seen"] if i % 2 else [])
    c = client(imap)
    c.select_folder("INBOX")
    typ, data = c._imap.uid("SEARCH", "RETURN", "(MIN MAX COUNT)", "UNSEEN")
    esearch = c._imap.untagged_responses.pop("ESEARCH")[0]
    assert b"MIN 1" in esearch and b"MAX 5" in esearch and b"COUNT 3" in esearch
    typ, data = c._imap.uid("SEARCH", "RETURN", "(SAVE)", "SEEN")
    typ, data = c._imap.uid("FETCH", "$", "(UID)")
    assert sorted(int(d.split()[2].rstrip(b")")) for d in data if d) == [2, 4, 6]
    c.logout()


def test_move_and_uidplus(imap):
    for i in range(3):
        imap.deliver("alice", message(i))
    c = client(imap)
    c.select_folder("INBOX")
    c.move([1, 2], "Archive")
    assert c.search() == [3]
    assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 2
    c.add_flags([3], [b"\\Deleted"])
    c.uid_expunge([3])
    assert c.search() == []
    c.logout()


def test_list_status_and_special_use_create(imap):
    imap.deliver("alice", message(1))
    c = client(imap)
    c.create_folder("Receipts")
    typ, data = c._imap._simple_command("CREATE", "Everything", "(USE (\\All))")
    assert typ == "OK"
    typ, data = c._imap._simple_command("LIST", '""', "*", "RETURN", "(SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    assert typ == "OK"
    statuses = c._imap.untagged_responses.get("STATUS", [])
    assert any(s.startswith(b"INBOX (MESSAGES 1 UNSEEN 1)") for s in statuses)
    lists = c._imap.untagged_responses.get("LIST", [])
    assert any(b"\\All" in x and x.endswith(b"Everything") for x in lists)
    c.logout()


def test_utf8_accept_names(imap):
    c = client(imap)
    c.enable("UTF8=ACCEPT")
    c._imap._simple_command("CREATE", '"Grüße"'.encode())
    c._imap.untagged_responses.clear()
    typ, data = c._imap._simple_command("LIST", '""', '"Gr*"')
    assert data and "Grüße".encode() in c._imap.untagged_responses["LIST"][0]
    c.logout()
    c = client(imap)
    assert "Grüße" in [f[2] for f in c.list_folders()]  # modified UTF-7 for a client without UTF8
    c.logout()


def test_two_sessions_see_each_others_changes(imap):
    imap.deliver("alice", message(1))
    imap.deliver("alice", message(2))
    a = client(imap)
    b = client(imap)
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    a.add_flags([1], [b"\\Flagged"])
    a.delete_messages([2])
    a.expunge()
    imap.deliver("alice", message(3))
    resp = b.noop()[1]
    kinds = {(r[1] if isinstance(r[1], bytes) else None) for r in resp}
    assert b"EXPUNGE" in kinds and b"EXISTS" in kinds and b"FETCH" in kinds
    fetch = next(r for r in resp if r[1] == b"FETCH")
    assert b"\\Flagged" in fetch[2][fetch[2].index(b"FLAGS") + 1]
    # during FETCH, EXPUNGE is held back (message numbers must not shift), then sent later
    a.delete_messages([1])
    a.expunge()
    b.use_uid = False
    assert sorted(b.fetch([1, 2], ["FLAGS"])) == [1, 2]  # no EXPUNGE yet: numbers stay put
    assert (1, b"EXPUNGE") in b.noop()[1]
    assert b.search() == [1]
    a.logout()
    b.logout()


def test_idle_wakes_within_100ms_of_delivery(imap):
    """Latency from the delivery being committed (the deliverer told "done") to the idling
    client holding the EXISTS; the commit's own fsync is not counted."""
    c = client(imap)
    c.select_folder("INBOX")
    c.idle()
    lat = []
    for n in range(5):
        time.sleep(0.05)
        done: list[float] = []
        th = threading.Thread(target=lambda n=n, done=done: (imap.deliver("alice", message(n)), done.append(time.perf_counter())))
        th.start()
        resp = c.idle_check(timeout=2)
        got = time.perf_counter()
        th.join()
        lat.append(max(0.0, got - done[0]))
        assert any(r[1] == b"EXISTS" for r in resp), resp
    c.idle_done()
    assert max(lat) < 0.1, lat
    c.logout()


def test_idle_sees_flag_changes_from_other_sessions(imap):
    imap.deliver("alice", message(1))
    c = client(imap)
    c.select_folder("INBOX")
    c.idle()
    o = client(imap)
    o.select_folder("INBOX")
    o.add_flags([1], [b"\\Answered"])
    resp = c.idle_check(timeout=2)
    c.idle_done()
    assert any(r[1] == b"FETCH" for r in resp), resp
    o.logout()
    c.logout()


def test_connection_limit_per_user(tmp_path):
    from .conftest import start_server, stop_server

    srv, t = start_server(tmp_path, max_connections_per_user=2)
    srv.add_user("alice")
    try:
        a, b = client(srv), client(srv)
        with pytest.raises(imapclient.exceptions.LoginError, match="LIMIT"):
            client(srv)
        a.logout()
        client(srv).logout()
        b.logout()
    finally:
        stop_server(srv, t)


def test_qresync_vanished_in_fetch_and_updates(imap):
    for i in range(4):
        imap.deliver("alice", message(i))
    c = client(imap)
    c.enable("QRESYNC")
    hms = c.select_folder("INBOX")[b"HIGHESTMODSEQ"]
    o = client(imap)
    o.select_folder("INBOX")
    o.delete_messages([2, 3])
    o.expunge()
    o.add_flags([4], [b"$x"])
    o.logout()
    typ, data = c._imap.uid("FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {hms} VANISHED)")
    assert typ == "OK"
    assert c._imap.untagged_responses.pop("VANISHED") == [b"(EARLIER) 2:3"]
    assert any(b"UID 4" in d and b"$x" in d for d in data if d)
    # with QRESYNC on, expunges reach this session as VANISHED, not EXPUNGE
    c.noop()
    c._imap.untagged_responses.clear()
    o = client(imap)
    o.select_folder("INBOX")
    o.delete_messages([1])
    o.expunge()
    o.logout()
    resp = c.noop()[1]
    assert resp == [(b"VANISHED", 1)]
    c.logout()


def test_utf8_append(imap):
    c = client(imap)
    c.enable("UTF8=ACCEPT")
    raw = "From: jörg@example.de\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    tag = c._imap._new_tag()
    c._imap.send(tag + b" APPEND INBOX UTF8 (~{%d+}\r\n" % len(raw) + raw + b")\r\n")
    while True:
        line = c._imap._get_line()
        if line.startswith(tag):
            break
    assert b"OK [APPENDUID" in line
    c.select_folder("INBOX")
    env = c.fetch([1], ["ENVELOPE"])[1][b"ENVELOPE"]
    assert env.subject == "Grüße".encode()
    c.logout()


def test_imap4rev2_session(imap):
    imap.deliver("alice", message(1))
    c = client(imap)
    assert b"IMAP4REV2" in [x.upper() for x in c.capabilities()]
    c.enable("IMAP4rev2")
    c._imap._simple_command("CREATE", '"Ärger"'.encode())
    c._imap.untagged_responses.clear()
    typ, data = c._imap._simple_command("SELECT", "INBOX")
    assert "RECENT" not in c._imap.untagged_responses
    assert c._imap.untagged_responses["LIST"] == [b'() "/" INBOX']
    c._imap.state = "SELECTED"  # imaplib tracks states itself
    typ, data = c._imap._simple_command("SEARCH", "ALL")
    assert c._imap.untagged_responses["ESEARCH"][-1].endswith(b"ALL 1")
    c._imap._simple_command("LIST", '""', '"Ä*"'.encode())
    assert c._imap.untagged_responses["LIST"][-1].endswith('"Ärger"'.encode())
    c.logout()


def test_noop_polls_cheaply_yet_never_misses_a_change(imap, monkeypatch):
    """A NOOP looks at the database only when something was committed since the session last
    looked; a delivery made the instant before a NOOP is still reported by it."""
    imap.deliver("alice", message(1))
    c = client(imap)
    c.select_folder("INBOX")
    db = imap.db
    reads = []
    real_read = db.read

    async def counting_read(fn, *args):
        reads.append(fn.__name__)
        return await real_read(fn, *args)

    monkeypatch.setattr(db, "read", counting_read)
    for _ in range(5):
        assert c.noop()[0].startswith(b"NOOP completed")
    assert "changes_since" not in reads  # nothing committed: no look
    for n in range(2, 5):
        imap.deliver("alice", message(n))  # committed; its notification may still be on the way
        assert (n, b"EXISTS") in c.noop()[1]
    c.logout()
