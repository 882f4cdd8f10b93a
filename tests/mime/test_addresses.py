"""The fast path for common address headers must give exactly what the email package's full
parser gives, for every value it accepts."""

from __future__ import annotations

from email.utils import getaddresses

from hypothesis import given, settings
from hypothesis import strategies as st

from mailpair.mime.analysis import analyse
from mailpair.mime.structure import _simple_addresses

atom = st.sampled_from(["john", "J.", "Smith", "a+b", "x_y", "O'Brien", "=?utf-8?q?J=C3=B6rg?=", "Müller", "a.b", "x-y", ""])
sep = st.sampled_from([" ", "  ", "\t", ""])
form = st.sampled_from(["{d} <{a}>", "{a}", "<{a}>", "{d}<{a}>", " {d} <{a}> ", '"{d}" <{a}>', "{a} ({d})", "{d}: {a};"])


@st.composite
def address_values(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        display = draw(sep).join(draw(st.lists(atom, max_size=3)))
        addr = draw(atom) + draw(st.sampled_from(["@", "", "@@"])) + draw(atom)
        parts.append(draw(form).format(d=display, a=addr))
    return draw(st.sampled_from([",", ", ", " ,"])).join(parts)


@settings(max_examples=1000, deadline=None)
@given(address_values())
def test_fast_path_agrees_with_getaddresses(value):
    fast = _simple_addresses([value])
    if fast is not None:
        assert fast == getaddresses([value])


def test_common_forms_take_the_fast_path():
    assert _simple_addresses(["Sender <sender@example.org>", "a@b.c, J. Smith <j@x.y>"]) == [
        ("Sender", "sender@example.org"),
        ("", "a@b.c"),
        ("J. Smith", "j@x.y"),
    ]
    assert _simple_addresses(['"Doe, John" <j@x.y>']) is None  # quoted: the full parser decides


def test_envelope_addresses():
    env, _ = analyse(b"From: Ann Lee <ann@example.org>\r\nTo: bob@example.org, Cy <cy@example.org>\r\nSubject: x\r\n\r\nhi\r\n")
    assert env[2] == [[b"Ann Lee", None, b"ann", b"example.org"]]
    assert env[5] == [[None, None, b"bob", b"example.org"], [b"Cy", None, b"cy", b"example.org"]]


def test_groups_become_start_and_end_markers():
    env, _ = analyse(
        b"From: a@example.org\r\nTo: undisclosed-recipients:;\r\nCc: Team: b@example.org, Cy <c@example.org>;\r\n\r\nx\r\n"
    )
    assert env[5] == [[None, None, b"undisclosed-recipients", None], [None, None, None, None]]
    assert env[6] == [
        [None, None, b"Team", None],
        [None, None, b"b", b"example.org"],
        [b"Cy", None, b"c", b"example.org"],
        [None, None, None, None],
    ]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab@.,;:<>()"\\[] \t\r\nxé=?')), max_size=60))
def test_address_grammar_never_raises_and_markers_pair_up(value):
    """Any header value parses (rule: never raise), group markers come in start/end pairs, and
    only group markers have a NIL host."""
    from mailpair.mime.addresses import parse

    out = parse(value)
    depth = 0
    for _name, _adl, mailbox, host in out:
        if host is None:
            depth += 1 if mailbox is not None else -1
            assert depth in (0, 1)
    assert depth == 0
