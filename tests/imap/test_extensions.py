"""Extensions Dovecot has (issue 16): MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), through a
real client library where one supports them (imapclient's multiappend) and byte for byte where
none does."""

from __future__ import annotations

import re

import imapclient

from .conftest import PASSWORD, message


def _client(srv) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port, ssl=False, timeout=10)
    c.login("alice", PASSWORD)
    return c


def test_multiappend_with_imapclient(imap):
    """RFC 3502: several messages in one APPEND; RFC 4315: APPENDUID carries their UID set."""
    c = _client(imap)
    assert b"MULTIAPPEND" in c.capabilities()
    msgs = [message(1).decode(), {"msg": message(2).decode(), "flags": (b"\\Seen",)}, message(3).decode()]
    reply = c.multiappend("INBOX", msgs)
    reply = reply if isinstance(reply, bytes) else b" ".join(x if isinstance(x, bytes) else str(x).encode() for x in reply)
    assert re.search(rb"APPENDUID \d+ 1:3", reply), reply
    c.select_folder("INBOX")
    got = c.fetch([1, 2, 3], ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    assert [v[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for _, v in sorted(got.items())] == [
        b"Subject: message 1",
        b"Subject: message 2",
        b"Subject: message 3",
    ]
    assert b"\\Seen" in got[2][b"FLAGS"] and b"\\Seen" not in got[1][b"FLAGS"]
    c.logout()


def test_multiappend_is_all_or_nothing(memory_host):
    """RFC 3502: if the server cannot append all the messages, it appends none. The third is
    empty (refused): the first two must not be stored either."""

    async def script(c):
        one, two = b"Subject: one\r\n\r\nx", b"Subject: two\r\n\r\ny"
        c.t.send(b"a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s {0+}\r\n\r\n" % (len(one), one, len(two), two))
        out = (await c.t.wait_for(b"a ")).split(b"\r\n")
        assert out[-2].startswith(b"a NO"), out
        out = await c.cmd(b"s STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 0" in out[0], out

    async def go():
        c = memory_host.client()
        await c.login()
        await script(c)
        await c.close()

    memory_host.run(go())


def test_catenate_text_and_urls(memory_host):
    """RFC 4469: CATENATE joins TEXT literals and parts of stored messages named by IMAP URLs
    (RFC 5092), with SECTION and PARTIAL; a bad URL is NO [BADURL] and appends nothing."""
    memory_host.deliver(
        "alice",
        b"From: a@example.test\r\nSubject: source\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--x--\r\n",
    )

    async def go():
        c = memory_host.client()
        await c.login()
        out = await c.cmd(b"s SELECT INBOX")
        uv = int(re.search(rb"UIDVALIDITY (\d+)", b"\r\n".join(out)).group(1))
        assert b"CATENATE" in (await c.cmd(b"k CAPABILITY"))[0]
        head = b"From: me@example.test\r\nSubject: forwarded\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n--y\r\n"
        url1 = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2.MIME"' % uv
        url2 = b'"imap://alice@localhost/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2"' % uv
        url3 = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=1/;PARTIAL=0.5"' % uv
        tail = b"\r\n--y\r\nContent-Type: text/plain\r\n\r\n"
        cmd = b"a APPEND INBOX CATENATE (TEXT {%d+}\r\n" % len(head) + head + b" URL " + url1 + b" URL " + url2
        cmd += b" TEXT {%d+}\r\n" % len(tail) + tail + b" URL " + url3 + b" TEXT {9+}\r\n\r\n--y--\r\n)\r\n"
        c.t.send(cmd)
        out = (await c.t.wait_for(b"a ")).split(b"\r\n")
        assert out[-2].startswith(b"a OK [APPENDUID %d 2]" % uv), out
        out = await c.cmd(b"f UID FETCH 2 (BODY.PEEK[] BINARY.PEEK[1] BODY.PEEK[2])")
        text = b"\r\n".join(out)
        assert b"Content-Transfer-Encoding: base64\r\n\r\nQUJD" in text
        assert b"BINARY[1] {3}\r\nABC" in text, text
        assert b"BODY[2] {5}\r\nfirst" in text, text
        # A URL naming a message that does not exist: NO [BADURL ...], nothing appended.
        bad = b'"/INBOX;UIDVALIDITY=%d/;UID=99"' % uv
        out = await c.cmd(b"b APPEND INBOX CATENATE (URL " + bad + b")")
        assert out[-1].startswith(b"b NO [BADURL /INBOX;UIDVALIDITY="), out
        out = await c.cmd(b'e APPEND INBOX CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")')
        assert out[-1].startswith(b"e NO [BADURL"), out  # UIDVALIDITY changed
        out = await c.cmd(b'g APPEND INBOX CATENATE (URL "imap://bob@localhost/INBOX;UIDVALIDITY=%d/;UID=1")' % uv)
        assert out[-1].startswith(b"g NO [BADURL"), out  # another user's mailbox
        out = await c.cmd(b"h STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 2" in out[0], out
        await c.close()

    memory_host.run(go())


def test_esort_and_partial(memory_host):
    """ESORT (RFC 5267 3.2): SORT RETURN gives ESEARCH with MIN/MAX as the first/last in sort
    order and ALL in sort order; PARTIAL (RFC 9394): positions of the result, from the end when
    negative, for SEARCH, SORT and the UID FETCH modifier."""
    for i, subject in enumerate(["delta", "alpha", "charlie", "bravo", "echo"]):
        memory_host.deliver("alice", message(i, subject=subject))

    async def go():
        c = memory_host.client()
        await c.login()
        assert b"ESORT" in (await c.cmd(b"k CAPABILITY"))[0]
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"a SORT RETURN (MIN MAX ALL COUNT) (SUBJECT) UTF-8 ALL")
        assert out[0] == b'* ESEARCH (TAG "a") MIN 2 MAX 5 ALL 2,4,3,1,5 COUNT 5', out
        out = await c.cmd(b"b UID SORT RETURN (PARTIAL 2:3) (SUBJECT) UTF-8 ALL")
        assert out[0] == b'* ESEARCH (TAG "b") UID PARTIAL (2:3 4,3)', out
        out = await c.cmd(b"c SEARCH RETURN (PARTIAL -1:-2) ALL")
        assert out[0] == b'* ESEARCH (TAG "c") PARTIAL (-1:-2 4:5)', out
        out = await c.cmd(b"d SEARCH RETURN (PARTIAL 7:9) ALL")
        assert out[0] == b'* ESEARCH (TAG "d") PARTIAL (7:9 NIL)', out
        out = await c.cmd(b"e SEARCH RETURN (PARTIAL 1:2 COUNT) ALL")
        assert out[0] == b'* ESEARCH (TAG "e") COUNT 5 PARTIAL (1:2 1:2)', out
        assert (await c.cmd(b"f SEARCH RETURN (PARTIAL 0:2) ALL"))[-1].startswith(b"f BAD")
        assert (await c.cmd(b"g SEARCH RETURN (PARTIAL 1:-2) ALL"))[-1].startswith(b"g BAD")
        out = await c.cmd(b"h UID FETCH 1:* (UID) (PARTIAL -1:-2)")
        assert out[:-1] == [b"* 4 FETCH (UID 4)", b"* 5 FETCH (UID 5)"], out
        await c.close()

    memory_host.run(go())
