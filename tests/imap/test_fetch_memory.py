"""FETCH costs memory per message, not per command (issue 11), and says the same bytes as before.

- Body sections are found by offsets and base64 decoded from a view, as the regex walk and the
  cleaned-copy decoder did, on fuzzed inputs.
- A transcript of many FETCH forms over a mixed mailbox (small and large messages, multipart,
  a NUL byte, partials inside and past the end) is byte for byte the one the code before the
  streaming FETCH gave (its digest is pinned), and the same whatever the group and piece sizes;
  under COMPRESS=DEFLATE too.
- Through a real node and a real client (imaplib): `UID FETCH 1:* (BODY.PEEK[])` over eight 8 MiB
  messages raises the node's peak resident set by a few times one message, not by the sum; and a
  client that stops reading mid-FETCH leaves the node holding a message or two, not the mailbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import imaplib
import random
import re
import socket
import time
import zlib
from pathlib import Path

import pytest

from mailpair import mailmix
from mailpair.mime.parts import multipart_spans
from mailpair.protocols.imap import cmd_message, sections
from mailpair.protocols.imap import fetch as fetchmod
from mailpair.store import prepare_message
from tests.imap.conftest import PASSWORD, close_memory_host, make_memory_host

KiB = 1024
MiB = 1024 * KiB

# sha256 of transcript(_PINNED_FORMS) as the code before the streaming FETCH rendered it (commit
# 0604f79). The forms leave out ENVELOPE and BODYSTRUCTURE, which the MIME analysis may rightly
# change; the transcript that has them is checked against itself in any group and piece size.
PINNED = "c2c3d7bde48f1e933ce64e5a71f2968f72127745dd03d611c9e8c00567c35eef"

_FORMS = [
    b"FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
    b"FETCH 1:* ALL",
    b"FETCH 1:* FULL",
    b"FETCH 1:* (BODYSTRUCTURE ENVELOPE)",
    b"UID FETCH 1:* (BODY.PEEK[])",
    b"UID FETCH 1:* (BODY.PEEK[]<1000.5000000>)",
    b"UID FETCH 1:* (BODY.PEEK[]<0.100> BODY.PEEK[]<70000> FLAGS)",
    b"UID FETCH 1:* (BODY.PEEK[]<99999999.10>)",
    b"UID FETCH 1:* (BINARY.PEEK[]<10.200000>)",
    b"UID FETCH 1:* (BODY.PEEK[2] BINARY.PEEK[2])",
    b"UID FETCH 1:* (BODY.PEEK[2] BINARY.PEEK[2] BODYSTRUCTURE)",
    b"UID FETCH 1:* (BODY.PEEK[1] BODY.PEEK[1.MIME] BINARY.SIZE[2] BINARY.SIZE[1])",
    b"UID FETCH 1:* (BODY.PEEK[2]<10.70000> BINARY.PEEK[2]<5.300000> BINARY.PEEK[1]<0.5>)",
    b"UID FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT]<3.100> BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])",
    b"UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] BODY.PEEK[9] BODY.PEEK[1.2.3])",
    b"UID FETCH 1:* (RFC822.HEADER RFC822.SIZE UID)",
    b"UID FETCH 2,4,7 (RFC822.TEXT MODSEQ)",
    b"UID FETCH 1,3,8 (BODY.PEEK[] UID)",
    b"FETCH 2:5 (RFC822)",
    b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    b"FETCH 3 (BODY[])",
    b"FETCH 1:* (BODY[TEXT]<0.50>)",
    b"FETCH 1:* (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BINARY.PEEK[2.2])",
    b"FETCH 1:* (BODY.PEEK[3.1] BODY.PEEK[3.1.HEADER] BODY.PEEK[3.1.TEXT]<2.5> BODY.PEEK[2.1.2] BODY.PEEK[1.TEXT])",
    b"FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[4] BODY.PEEK[4] BODY.PEEK[3.HEADER.FIELDS (SUBJECT)])",
]

_PINNED_FORMS = [f for f in _FORMS if not re.search(rb"ALL|FULL|ENVELOPE|BODYSTRUCTURE", f)]


def _mailbox() -> list[bytes]:
    """Small and large, single and multipart, one with a NUL in its text, one at 64 KiB."""
    nul = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: nul\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n"
        b"a NUL \x00 here\r\n" + b"x" * 100 + b"\r\n"
    )
    inner = (
        b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
        b"--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n--alt\r\n"
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>h=C3=A9</p>=\r\n\r\n--alt--\r\n"
    )
    nested = (
        b"From: n@example.org\r\nSubject: nested\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
        b"--outer\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ\r\n"
        b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n"
        b"--outer\r\nContent-Type: multipart/digest; boundary=dg\r\n\r\n"
        b"--dg\r\n\r\nSubject: in digest\r\n\r\ndigest body\r\n--dg--\r\n"
        b"--outer\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nodd\r\n"
        b"--outer--\r\nepilogue\r\n"
    )
    sizes = [700, 3 * KiB, 64 * KiB, 200 * KiB, 1 * MiB + 17, 5 * MiB + 3, 40 * KiB]
    msgs = [mailmix.message(n, seed=i) for i, n in enumerate(sizes)]
    return msgs[:3] + [nul] + msgs[3:] + [nested]


def transcript(tmp: Path, forms: list[bytes] = _FORMS) -> bytes:
    """Every form of forms over _mailbox() through a whole session, timings taken out."""
    m = make_memory_host(tmp)
    try:
        m.add_user("alice")
        for i, raw in enumerate(_mailbox()):
            prepared = prepare_message(raw)
            date = 1_790_000_000_000_000 + i * 1_000_000  # fixed INTERNALDATEs
            m.db.commit("deliver", recipients=[("alice", None)], date=date, flags=[], **prepared)
        out: list[bytes] = []

        async def session() -> None:
            c = m.client()
            await c.login()
            await c.cmd(b"S SELECT INBOX")
            for n, form in enumerate(forms):
                tag = b"F%d" % n
                c.t.send(tag + b" " + form + b"\r\n")
                got = await c.t.wait_for(tag + b" ")
                out.append(re.sub(rb" \(\d+\.\d+ secs\)", b"", got))
            await c.close()

        m.run(session(), timeout=120)
        return b"".join(out)
    finally:
        close_memory_host(m)


def digest(tmp: Path) -> str:
    return hashlib.sha256(transcript(tmp, _PINNED_FORMS)).hexdigest()


def test_fetch_says_what_it_said_before(tmp_path):
    assert digest(tmp_path / "a") == PINNED


def test_fetch_is_the_same_in_any_group_and_piece_size(tmp_path, monkeypatch):
    whole = transcript(tmp_path / "a")
    monkeypatch.setattr(fetchmod, "GROUP_BYTES", 1)  # each message a group of its own
    monkeypatch.setattr(fetchmod, "SEPARATE_BYTES", 1)  # every literal's data a piece
    monkeypatch.setattr(cmd_message, "_SLICE", 1000)  # and written in slices
    assert transcript(tmp_path / "b") == whole


def test_large_fetch_under_compress_deflate(imap):
    """The slices a large literal goes out in are each compressed (a sync flush apiece): the
    client inflates what the messages were."""
    msgs = [mailmix.message(3 * MiB + 5, seed=1), mailmix.message(2000, seed=2), mailmix.message(2 * MiB, seed=3)]
    for raw in msgs:
        imap.deliver("alice", raw)
    s = socket.create_connection(("127.0.0.1", imap.port), timeout=30)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"a LOGIN alice " + PASSWORD.encode() + b"\r\n")
    while not f.readline().startswith(b"a OK"):
        pass
    s.sendall(b"b COMPRESS DEFLATE\r\n")
    assert f.readline().startswith(b"b OK")
    comp, decomp = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    s.sendall(
        comp.compress(b"c EXAMINE INBOX\r\nd FETCH 1:* (BODY.PEEK[] BODY.PEEK[]<100.3000000>)\r\n")
        + comp.flush(zlib.Z_SYNC_FLUSH)
    )
    got = b""
    while not re.search(rb"\r\nd OK", got):
        data = s.recv(1 << 20)
        assert data
        got += decomp.decompress(data)
    s.close()
    for n, raw in enumerate(msgs, 1):
        part = raw[100:3000100]
        head = b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(raw))
        assert head + raw + b" BODY[]<100> {%d}\r\n" % len(part) + part + b")\r\n" in got


# ---------------------------------------------------------------------------- sections without copies
def test_multipart_spans_by_offset_agree_with_the_regex_walk():
    """sections.multipart_spans_in (bytes.find, offsets) cuts every body where mime.parts'
    regex walk does, quirks included (a delimiter whose CRLF the previous one took is none)."""
    tokens = [b"--B", b"--B--", b"\r\n", b"\n", b"\r", b" ", b"\t", b"x", b"-", b"--", b"B", b"--B-", b"\r\n--B\r\n"]
    rnd = random.Random(11)
    for boundary in ("B", "-B", "B-", "--"):
        toks = [t.replace(b"B", boundary.encode()) for t in tokens]
        for _ in range(5000):
            pre, body, post = (b"".join(rnd.choice(toks) for _ in range(rnd.randint(0, n))) for n in (3, 14, 3))
            start, end = len(pre), len(pre) + len(body)
            want = [(start + a, start + b) for a, b in multipart_spans(body, boundary)]
            assert sections.multipart_spans_in(pre + body + post, start, end, boundary) == want, (pre, body, post)


def test_base64_without_a_cleaned_copy_decodes_as_before():
    def before(body: bytes) -> bytes | None:
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
        except (binascii.Error, ValueError):
            return None

    def now(body: bytes) -> bytes | None:
        try:
            return sections._base64(memoryview(body))
        except sections.UnknownEncoding:
            return None

    rnd = random.Random(5)
    chars = [b"Q", b"U", b"J", b"D", b"=", b"\r\n", b" ", b"*", b"\x00", b"-", b"\xff", b"/", b"+"]
    for _ in range(20000):
        body = b"".join(rnd.choice(chars) for _ in range(rnd.randint(0, 14)))
        assert now(body) == before(body), body
    for _ in range(500):
        enc = base64.encodebytes(rnd.randbytes(rnd.randint(0, 300)))
        enc = enc.rstrip(b"=\n") if rnd.random() < 0.5 else enc
        assert now(enc) == before(enc), enc


# ---------------------------------------------------------------------------- a real node
def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak(pid: int) -> float:
    """Reset the process's peak resident set to what it holds now (Linux); that, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib(pid, "VmRSS") * KiB


def _peak_growth(pid: int, base: float) -> float:
    return _status_kib(pid, "VmHWM") * KiB - base


def _line(sock: socket.socket, buf: bytearray, tag: bytes) -> None:
    """Read until the tagged reply to tag has arrived (small replies only)."""
    while not re.search(rb"(^|\r\n)" + re.escape(tag) + rb" [^\r]*\r\n", bytes(buf)):
        data = sock.recv(65536)
        assert data, bytes(buf[-200:])
        buf += data


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak RSS")
def test_fetch_of_large_messages_costs_a_few_messages_not_the_mailbox(tmp_path):
    from tests.helpers.pair import active, pair_down, pair_up

    size, count = 8 * MiB, 8
    info = pair_up(tmp_path / "pair", users=1)
    try:
        node = active(info)
        pid, user = node["pid"], info["users"][0]
        c = imaplib.IMAP4("127.0.0.1", node["imap"], timeout=120)
        c.login(user["name"], user["password"])
        sent = [mailmix.message(size, seed=i) for i in range(count)]
        assert c.create("Big")[0] == "OK"
        for raw in sent:
            assert c.append("Big", None, None, raw)[0] == "OK"
        c.select("Big", readonly=True)

        # A whole mailbox fetched by a client that reads as fast as it can.
        base = _reset_peak(pid)
        typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
        grew = _peak_growth(pid, base)
        assert typ == "OK"
        assert [x[1] for x in data if isinstance(x, tuple)] == sent
        del data
        print(f"whole FETCH: +{grew / MiB:.1f} MiB")
        assert grew < 3 * size, f"FETCH raised the node's peak by {grew / MiB:.1f} MiB for {count} x {size // MiB} MiB"

        # A client that stops reading mid-FETCH: the node waits for it, holding a message or two.
        s = socket.create_connection(("127.0.0.1", node["imap"]), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        buf = bytearray()
        s.sendall(b"a LOGIN " + user["name"].encode() + b" " + user["password"].encode() + b"\r\n")
        _line(s, buf, b"a")
        s.sendall(b"b EXAMINE Big\r\n")
        _line(s, buf, b"b")
        base = _reset_peak(pid)
        s.sendall(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
        got = 0
        while got < 2 * MiB:
            got += len(s.recv(65536))
        time.sleep(3)  # long enough for a server that buffers to render the whole mailbox
        grew = _peak_growth(pid, base)
        s.close()
        print(f"stalled FETCH: +{grew / MiB:.1f} MiB")
        assert grew < 3 * size, f"a stalled FETCH raised the node's peak by {grew / MiB:.1f} MiB"
        assert c.noop()[0] == "OK"  # the node serves on
        c.logout()
    finally:
        pair_down(tmp_path / "pair")
