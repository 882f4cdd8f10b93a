"""The lean multipart path (mailpair/mime/lean.py) must give exactly the ENVELOPE and
BODYSTRUCTURE the email package's full parse gives, for every message: well-formed ones through
the lean path itself, anything it is unsure of through the fallback. And it must keep a large
message's analysis to a small fraction of the message's own size in memory."""

from __future__ import annotations

import base64
import tracemalloc

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mailpair import mailmix
from mailpair.mime import lean
from mailpair.mime.analysis import analyse


def email_package(raw: bytes):
    """What analyse() gave before the lean path (for multipart mail, the email package's full
    parse): the reference the lean path is held to."""
    original = lean.analyse_lean
    lean.analyse_lean = lambda raw: None
    try:
        return analyse(raw)
    finally:
        lean.analyse_lean = original


# Boundaries that are prefixes of one another, none another plus `--` and padding (which would
# make one's delimiter the other's close delimiter): a well-formed message may nest any of them.
CLEAN = ""  # marks a well-formed set (first): descendants leave out what ancestors use
CLEAN_BOUNDARIES = (CLEAN, "b", "b1", "b-", "b-1", "b--x", "=_b", "=_b=", "abc def", "b1x", "=_c")
# Added for messages that need not be well formed: a boundary nested in itself, and one whose
# delimiter is another's close delimiter.
MESSY_BOUNDARIES = CLEAN_BOUNDARIES[1:] + ("b--", "b-- ", "b")

leaf_types = st.sampled_from(
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        'text/plain; charset="iso-8859-1"; format=flowed',
        "TEXT/HTML; Charset=UTF-8",
        'application/pdf; name="report 1.pdf"',
        'image/png;\r\n name*0="a-long-";\r\n name*1="name.png"',
        "application/octet-stream; name*=utf-8''%C3%A9t%C3%A9.bin",
        "text/plain; charset*=us-ascii'en'plain",
        "text/x-diff",
        "bogus",
    ]
)
encodings = st.sampled_from([None, "base64", "quoted-printable", "7bit", "8bit", " Base64 "])
dispositions = st.sampled_from(
    [
        None,
        "inline",
        'attachment; filename="a.pdf"',
        "attachment;\r\n filename*=utf-8''%E2%82%AC%20rate.txt",
        "attachment; filename*0*=utf-8''caf%C3%A9; filename*1=\".txt\"",
    ]
)
extras = st.lists(
    st.sampled_from(
        [
            "Content-ID: <id1@example.org>",
            "Content-Description: =?utf-8?q?caf=C3=A9?= notes",
            "Content-Description: caf\u00e9 in raw UTF-8",
            "Content-Language: en, de",
            "Content-Location: http://example.org/a",
            "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",
            "X-Long: " + "word " * 30,
            "X-Folded: first\r\n second\r\n\tthird",
        ]
    ),
    max_size=3,
)
text_lines = st.sampled_from(
    [
        "hello world",
        "",
        "-- ",
        "--b1x is not a delimiter of b1",
        "--b trailing words",
        "--b-1-",
        "--=_bx",
        "From here on",
        "caf=C3=A9 soft=",
        "a =3D b",
        "form\x0cfeed",
        "tab\tline",
        "na\u00efve caf\u00e9",
        "x" * 100,
    ]
)
paddings = st.sampled_from(["", "", " ", "\t", " \t "])


@st.composite
def leaf_body(draw) -> str:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        data = draw(st.binary(max_size=200))
        text = base64.encodebytes(data).decode().replace("\n", "\r\n")
    else:
        text = "\r\n".join(draw(st.lists(text_lines, max_size=6)))
    if draw(st.booleans()):
        text += "\r\n"
    return text


def header(name: str, value: str | None) -> str:
    return "" if value is None else f"{name}: {value}\r\n"


@st.composite
def entity(draw, depth: int, boundaries: tuple[str, ...], in_digest: bool = False) -> str:
    """A MIME entity (header, blank line, body), ending without a line end of its own."""
    kinds = ["leaf"] if depth <= 0 else ["leaf", "leaf", "multipart", "message"]
    kind = draw(st.sampled_from(kinds))
    extra = "".join(f"{x}\r\n" for x in draw(extras))
    if kind == "multipart":
        return draw(multipart(depth - 1, boundaries, extra))
    if kind == "message":
        ctype = None if in_digest and draw(st.booleans()) else draw(st.sampled_from(["message/rfc822", "Message/RFC822"]))
        inner = draw(message(depth - 1, boundaries))
        return header("Content-Type", ctype) + extra + "\r\n" + inner
    ctype = draw(leaf_types)
    if in_digest and ctype is None:
        ctype = "text/plain"  # a part without Content-Type is message/rfc822 in a digest
    head = header("Content-Type", ctype) + header("Content-Transfer-Encoding", draw(encodings))
    head += header("Content-Disposition", draw(dispositions)) + extra
    return head + "\r\n" + draw(leaf_body())


@st.composite
def multipart(draw, depth: int, boundaries: tuple[str, ...], extra: str = "") -> str:
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "digest", "signed"]))
    if boundaries[0] == CLEAN:
        # a well-formed message never reuses an enclosing boundary
        boundary = draw(st.sampled_from(boundaries[1:]))
        boundaries = tuple(b for b in boundaries if b != boundary)
    else:
        boundary = draw(st.sampled_from(boundaries))
    form = draw(st.integers(0, 2))
    if form == 0:
        ctype = f'multipart/{subtype}; boundary="{boundary}"'
    elif form == 1:
        ctype = f'multipart/{subtype};\r\n\tboundary="{boundary}"; type="text/html"'
    else:  # RFC 2231 continuations
        ctype = f'multipart/{subtype}; boundary*0="{boundary[:1]}"; boundary*1="{boundary[1:]}"'
    parts = draw(st.lists(entity(depth, boundaries, subtype == "digest"), min_size=1, max_size=4))
    out = f"Content-Type: {ctype}\r\n{extra}\r\n"
    if draw(st.booleans()):
        out += "\r\n".join(draw(st.lists(text_lines, min_size=1, max_size=3))) + "\r\n"  # preamble
    for part in parts:
        out += f"--{boundary}{draw(paddings)}\r\n{part}\r\n"
    out += f"--{boundary}--{draw(paddings)}"
    epilogue = draw(st.sampled_from([None, "", "epilogue text", "two\r\nlines"]))
    if epilogue is not None:
        out += "\r\n" + epilogue
    return out


@st.composite
def message(draw, depth: int, boundaries: tuple[str, ...]) -> str:
    """A whole message: envelope headers, then a MIME entity."""
    subject = draw(
        st.sampled_from(
            [
                "hello",
                "a subject long enough to be refolded when the generator writes it out again at seventy-eight",
                "folded\r\n subject",
                "=?utf-8?b?w6l0w6k=?=",
                "caf\u00e9",
            ]
        )
    )
    head = (
        f"From: Ann <ann@example.org>\r\nTo: bob@example.org, Carl <c@example.net>\r\nSubject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n"
    )
    return head + draw(st.one_of(multipart(depth, boundaries), entity(depth, boundaries)))


def encode(text: str) -> bytes:
    return text.encode("utf-8")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message(3, CLEAN_BOUNDARIES), st.sampled_from(["", "\r\n"]))
def test_well_formed_messages_take_the_lean_path_and_agree(text, end):
    raw = encode(text + end)
    want = email_package(raw)
    assert analyse(raw) == want
    got = lean.analyse_lean(raw)
    event("lean" if got is not None else "email package")
    top_header = raw.split(b"\r\n\r\n", 1)[0]
    if b"Content-Type: multipart/" in top_header or b"Content-Type: message/" in top_header:
        # The one well-formed case that leaves the lean path: a charset in RFC 2231 form on an
        # 8-bit body (the email package raises on it and analyse gives its last-guard answer).
        assert got is not None or (b"charset*=" in raw and not raw.isascii()), raw
    if got is not None:
        assert got == want


def mangle(draw, raw: bytes) -> bytes:
    """One of the ways real mail goes wrong, applied somewhere."""
    how = draw(st.integers(0, 7))
    if how == 0:
        return raw.replace(b"\r\n", b"\n")  # bare LF throughout
    if how == 1 and b"\r\n" in raw:
        i = draw(st.integers(0, raw.count(b"\r\n") - 1))
        at = -1
        for _ in range(i + 1):
            at = raw.find(b"\r\n", at + 1)
        return raw[:at] + raw[at + 1 :]  # one bare LF
    if how == 2:
        cut = raw.rfind(b"\r\n--")
        return raw[:cut] if cut > 0 else raw  # the last delimiter gone
    if how == 3:
        return raw.replace(b"\r\n\r\n", b"\r\n", 1)  # a header runs into its body
    if how == 4:
        i = raw.find(b"\r\n--")
        if i >= 0:
            j = raw.find(b"\r\n", i + 2)
            if j >= 0:
                return raw[: j + 2] + raw[i + 2 : j + 2] + raw[j + 2 :]  # a delimiter twice
    if how == 5:
        return raw.replace(b"\r\n\r\n", b"\r\nnot a header\r\n\r\n", 2)
    if how == 6:
        return raw.replace(b"\r\n--", b"\r--", 1)  # a bare CR before a delimiter
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_message_agrees_through_one_path_or_the_other(data):
    raw = encode(data.draw(message(3, MESSY_BOUNDARIES)))
    raw = mangle(data.draw, raw)
    want = email_package(raw)
    assert analyse(raw) == want
    got = lean.analyse_lean(raw)
    event("lean" if got is not None else "email package")
    if got is not None:
        assert got == want


def test_a_large_multipart_message_costs_a_fraction_of_itself():
    raw = mailmix.message(25 * 1024 * 1024, seed=3)
    # the same with 8-bit UTF-8 in its header and text part, as many clients send it
    eight_bit = raw.replace(b"Subject: Mix", "Subject: Caf\u00e9 mix".encode(), 1)
    eight_bit = eight_bit.replace(b"the ", "th\u00e9 ".encode(), 3)
    assert not eight_bit.isascii()
    for message in (raw, eight_bit):
        tracemalloc.start()
        try:
            result = analyse(message)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * len(message), peak  # the email package's full parse: 8.7 times
        assert result == email_package(message)


def test_mailmix_messages_take_the_lean_path():
    for size in (7000, 90 * 1024, 600 * 1024, 3 * 1024 * 1024):
        for seed in range(3):
            raw = mailmix.message(size, seed=seed)
            got = lean.analyse_lean(raw)
            assert got is not None
            assert got == email_package(raw)


def _many_parts(n: int) -> bytes:
    head = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    part = b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    return head + part * n + b"--x--\r\n"


def test_over_the_part_limit_the_last_part_runs_to_the_end():
    raw = _many_parts(lean.MAX_PARTS + 50)
    env, bs = lean.analyse_lean(raw)
    parts = bs[0]
    # The message itself is part 1, so it keeps MAX_PARTS - 1 children; the last of them runs
    # from its body to the end of the message, the fifty-odd parts after it included.
    assert len(parts) == lean.MAX_PARTS - 1
    assert parts[0][:8] == [b"TEXT", b"PLAIN", [b"CHARSET", b"US-ASCII"], None, None, b"7BIT", 5, 1]
    head = len(b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n")
    part = len(b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    last_body = head + (lean.MAX_PARTS - 2) * part + part - len(b"hello\r\n")
    assert parts[-1][6] == len(raw) - last_body
    assert parts[-1][7] == raw.count(b"\n", last_body)
    assert analyse(raw) == (env, bs)


def test_just_under_the_part_limit_matches_the_email_package():
    raw = _many_parts(lean.MAX_PARTS - 2)
    assert lean.analyse_lean(raw) == email_package(raw)


def test_nesting_deeper_than_the_limit_falls_back():
    depth = lean.MAX_DEPTH + 1
    head = b"From: a@b.c\r\n"
    body = b"Content-Type: text/plain\r\n\r\nleaf"
    for i in range(depth):
        body = b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n%s\r\n--n%d--" % (i, i, body, i)
    raw = head + body
    assert lean.analyse_lean(raw) is None
    assert analyse(raw) == email_package(raw)
    shallow = head + body.split(b"\r\n\r\n--n%d\r\n" % (depth - 60), 1)[1].rsplit(b"\r\n--n", 1)[0]
    assert lean.analyse_lean(shallow) == email_package(shallow)


def test_what_the_lean_path_leaves_to_the_email_package():
    good = _many_parts(2)
    assert lean.analyse_lean(good) is not None
    assert lean.analyse_lean(good.replace(b"\r\n", b"\n")) is None  # bare LF
    assert lean.analyse_lean(good[: good.rfind(b"--x--")]) is None  # no close delimiter
    assert lean.analyse_lean(good.replace(b"boundary=x", b"boundary=y")) is None  # no delimiter
    assert lean.analyse_lean(good.replace(b"boundary=x", b"foo=x")) is None  # no boundary
    big_8bit = good.replace(b"hello", "\u00e9".encode() * (lean.EIGHT_BIT_EXACT // 2 + 1), 1)
    assert lean.analyse_lean(big_8bit) is None
    small_8bit = good.replace(b"hello", "caf\u00e9".encode(), 1)
    assert lean.analyse_lean(small_8bit) == email_package(small_8bit)
    report = good.replace(b"Content-Type: text/plain", b"Content-Type: message/delivery-status", 1)
    assert lean.analyse_lean(report) is None
    for raw in (good.replace(b"\r\n", b"\n"), big_8bit, report):
        assert analyse(raw) == email_package(raw)
    single = b"From: a@b.c\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    assert lean.analyse_lean(single) is None  # structure.py's own single-part path


def test_a_boundary_folded_across_lines_falls_back():
    # The quoted boundary holds a line break: no line can match it, where a bytes search could.
    raw = (
        b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="a\r\n b"\r\n\r\n'
        b"--a\r\n b\r\nContent-Type: text/plain\r\n\r\nx\r\n--a\r\n b--\r\n"
    )
    assert lean.analyse_lean(raw) is None
    assert analyse(raw) == email_package(raw)


def test_message_rfc822_nested_deep_agrees():
    # Each level's size is the enclosed message written out again, headers refolded.
    body = b"Content-Type: text/plain\r\n\r\nleaf"
    for i in range(45):
        body = (
            b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\nContent-Type: message/rfc822\r\n\r\n"
            b"Subject: level %d %s\r\n%s\r\n--n%d\r\n\r\nleaf\r\n--n%d--" % (i, i, i, b"word " * (i % 20), body, i, i)
        )
    raw = b"From: a@b.c\r\n" + body
    got = lean.analyse_lean(raw)
    assert got is not None
    assert got == email_package(raw)


def test_the_cap_inside_a_message_rfc822_and_with_8bit_after_it():
    inner = _many_parts(lean.MAX_PARTS + 10) + "caf\u00e9\r\n".encode() * 300_000  # an 8-bit epilogue
    head = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
    rfc822 = b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    raw = head + rfc822 + inner + b"\r\n--outer--\r\n"
    env, bs = lean.analyse_lean(raw)
    part = bs[0][0]
    assert part[:2] == [b"MESSAGE", b"RFC822"]
    body_start = len(head) + len(rfc822)
    assert part[6] == len(raw) - body_start  # the capped message runs to the end
    assert part[9] == raw.count(b"\n", body_start)
    capped = part[8][0]
    assert len(capped) == lean.MAX_PARTS - 3  # the top, the message/rfc822 part, the enclosed message count first
    assert capped[-1][6] > 300_000
    assert len(bs[0]) == 1 and analyse(raw) == (env, bs)
