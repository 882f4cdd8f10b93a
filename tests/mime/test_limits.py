"""MIME analysis is bounded (mime/bounded.py): at most 10,000 parts in all and 100 levels of
nesting, the rest one opaque part, so a message built of tiny parts costs bounded time, memory
and record size; BODYSTRUCTURE and body sections agree on part numbers past the limit."""

from __future__ import annotations

import resource
import time

from mailpair.mime import bounded
from mailpair.mime.analysis import analyse
from mailpair.protocols.imap import sections, wire


def _count(bs) -> tuple[int, int]:
    """(parts, depth) of a stored BODYSTRUCTURE."""
    if isinstance(bs[0], list):
        counts = [_count(p) for p in bs[0]]
        return 1 + sum(c[0] for c in counts), 1 + max(c[1] for c in counts)
    if bs[0] == b"MESSAGE" and bs[1] == b"RFC82" + b"2" and isinstance(bs[8], list):
        n, d = _count(bs[8])
        return 1 + n, 1 + d
    return 1, 1


def _tiny_parts(n: int) -> bytes:
    head = b"From: a@example.test\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    part = b"--b\r\n\r\nx\r\n"
    return head + part * n + b"--b--\r\n"


def test_a_25_mib_message_of_tiny_parts_is_bounded():
    """Dovecot's cap, as mime/lean.py and mime/bounded.py both keep it: the 10,000th part (the
    message itself is the first) is the last and runs to the end of the message."""
    raw = _tiny_parts(25 * 1024 * 1024 // 10)
    assert len(raw) > 25 * 1024 * 1024 - 100
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    env, bs = analyse(raw)
    elapsed = time.perf_counter() - started
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    parts, _ = _count(bs)
    assert parts == bounded.MAX_PARTS
    assert len(bs[0]) == bounded.MAX_PARTS - 1
    tail = bs[0][-1]
    assert tail[6] > 20 * 1024 * 1024  # the capped part: everything to the end of the message
    record = wire.body(bs)
    assert len(record) < 2 * 1024 * 1024, len(record)
    assert grew_mib < 300, grew_mib
    assert elapsed < 30, elapsed
    # Sections agree with BODYSTRUCTURE: the last listed part is the capped one, to the end.
    last = len(bs[0])
    assert sections.section(raw, [1], "", []) == b"x"
    assert sections.section(raw, [last], "", []).startswith(b"x\r\n--b\r\n\r\nx\r\n")
    assert sections.section(raw, [last], "", []).endswith(b"--b--\r\n")
    assert len(sections.section(raw, [last], "", [])) == tail[6]
    try:
        sections.section(raw, [last + 1], "", [])
        raise AssertionError("a part past the capped one exists")
    except sections.NoSuchPart:
        pass


def test_both_capping_paths_number_parts_alike():
    """A message the lean path takes (CRLF, clean) and the same message with LF line ends (which
    only the full parse takes, reaching the bounded walk): the same number of parts, the capped
    one last; body sections follow the same numbering."""
    from mailpair.mime import lean

    crlf = _tiny_parts(12_000)
    assert lean.analyse_lean(crlf) is not None
    lf = crlf.replace(b"\r\n", b"\n")
    assert lean.analyse_lean(lf) is None
    for raw in (crlf, lf):
        _, bs = analyse(raw)
        assert len(bs[0]) == bounded.MAX_PARTS - 1
        assert sections.section(raw, [bounded.MAX_PARTS - 2], "", []) == b"x"
        assert sections.section(raw, [bounded.MAX_PARTS - 1], "", []).endswith(raw[raw.rindex(b"--b--") :])


def test_nesting_deeper_than_100_becomes_opaque():
    depth = 150
    raw = b"From: a@example.test\r\nSubject: deep\r\n"
    for i in range(depth):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    raw += b"Content-Type: text/plain\r\n\r\ncore\r\n"
    for i in reversed(range(depth)):
        raw += b"--b%d--\r\n" % i
    env, bs = analyse(raw)
    parts, levels = _count(bs)
    assert levels <= bounded.MAX_DEPTH + 1
    # The innermost listed level is one opaque part; sections walk the same tree.
    node = bs
    path = []
    while isinstance(node[0], list):
        path.append(1)
        node = node[0][0]
    assert node[:2] == [b"APPLICATION", b"OCTET-STREAM"]
    assert b"core" in sections.section(raw, path, "", [])


def test_ordinary_messages_do_not_take_the_bounded_path():
    raw = _tiny_parts(50)
    assert not bounded.needed(raw)
    _, bs = analyse(raw)
    assert len(bs[0]) == 50 and bs[0][0][:2] == [b"TEXT", b"PLAIN"]


def test_the_bounded_walk_agrees_with_the_full_parser_below_the_limits():
    """Same BODYSTRUCTURE from both paths for a message within the limits (the bounded walk is
    a second implementation: it must not drift)."""
    from mailpair.mime import structure

    raw = (
        b"From: a@example.test\r\nSubject: mix\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n"
        b'--o\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--i--\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@example.test\r\nSubject: in\r\n\r\ninner\r\n"
        b"--o\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n"
        b"--o\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n filename*=utf-8''%E2%82%AC.bin\r\n"
        b"Content-Language: en, de\r\n\r\nxyz\r\n--o--\r\n"
    )
    assert structure._bounded_structure(raw) == analyse(raw)[1]
