"""The fast path for clean single-part messages must index exactly the header fields the email
package's header parser stores, for every header block it accepts, and analyse() must give the
same ENVELOPE and BODYSTRUCTURE whichever path a message takes."""

from __future__ import annotations

import email.parser
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailpair.mime import structure
from mailpair.mime.analysis import analyse
from mailpair.mime.structure import _fast_fields, _headers

_SLOW = email.parser.BytesHeaderParser(policy=email.policy.compat32)

names = st.sampled_from(
    [
        "From",
        "To",
        "cc",
        "Subject",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
        "Content-Language",
        "Content-ID",
        "X-A",
        "Message-ID",
        "Date",
        "Sender",
        "X:Y",
        "",
    ]
)
values = st.sampled_from(
    [
        "a@b.c",
        "Ann <ann@example.org>",
        ' "Doe, J" <j@x.y>',
        "text/plain; charset=utf-8",
        "text/plain; name*=utf-8''%C3%A9.txt; format=\"flowed\"",
        "multipart/mixed; boundary=xyz",
        "TEXT/Html",
        'image/png; name="a;b.png"',
        "message/rfc822",
        "bogus",
        "attachment; filename=a.txt",
        "inline",
        "; x=1",
        "en, de",
        "quoted-printable",
        "8bit ",
        "base64",
        "=?utf-8?q?caf=C3=A9?=",
        "",
        " ",
        "\t x",
        "Müller <m@x.y>",
        "x\x0by",
        "x\ry",
    ]
)
endings = st.sampled_from(["\r\n", "\n"])


@st.composite
def header_blocks(draw) -> bytes:
    lines = []
    if draw(st.integers(0, 20)) == 0:
        lines.append("From someone@example.org Mon Nov 23 10:00:00 2026" + draw(endings))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 12))
        if kind == 0:
            lines.append(" folded " + draw(values) + draw(endings))  # a continuation
        elif kind == 1:
            lines.append("not a header line" + draw(endings))
        else:
            sep = draw(st.sampled_from([":", ": ", ":\t", " :"]))
            lines.append(draw(names) + sep + draw(values) + draw(endings))
    lines.append(draw(endings))
    return "".join(lines).encode("utf-8", "surrogateescape")


@settings(max_examples=1500, deadline=None)
@given(header_blocks())
def test_fast_fields_agree_with_the_email_package(block):
    fast = _fast_fields(block)
    if fast is not None:
        assert fast == _headers(_SLOW.parsebytes(block))


@settings(max_examples=1500, deadline=None)
@given(header_blocks(), st.sampled_from([b"hello\r\n", b"", b"line1\nline2", b"a\r\n" * 50]))
def test_analyse_is_the_same_on_both_paths(block, body):
    raw = block + body
    fast = analyse(raw)
    original = structure._fast_fields
    structure._fast_fields = lambda header: None  # every message through the email package
    try:
        slow = analyse(raw)
    finally:
        structure._fast_fields = original
    assert fast == slow


def test_common_headers_take_the_fast_path():
    block = b"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\nSubject: hi\r\n  there\r\nContent-Type: text/plain\r\n\r\n"
    fields = _fast_fields(block)
    assert fields is not None
    assert fields["subject"] == ["hi\r\n  there"]
    assert _fast_fields(b"From someone Mon Nov 23 2026\r\nTo: a@b.c\r\n\r\n") is None
    assert _fast_fields(b"To: a@b.c\r\nstray line\r\n\r\n") is None
