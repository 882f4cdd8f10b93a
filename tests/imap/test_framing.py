"""The sans-I/O layer: framing, tokenising and the response writer, over bytes only."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpair.protocols.imap import framing, mutf7, seqset, wire
from mailpair.protocols.imap.args import Atom, Binary, ParseError, tokenize


def events(fr: framing.Framer) -> list:
    out = []
    while (ev := fr.next_event()) is not None:
        out.append(ev)
    return out


def test_simple_command_in_pieces():
    fr = framing.Framer()
    for b in b"a1 NOOP\r\n":
        fr.feed(bytes([b]))
    evs = events(fr)
    assert evs == [framing.Command([b"a1 NOOP"])]


def test_synchronising_literal_asks_for_continuation():
    fr = framing.Framer()
    fr.feed(b"a1 LOGIN {5}\r\n")
    assert events(fr) == [framing.Continue()]
    fr.feed(b"alice {3+}\r\npw!\r\n")
    (cmd,) = events(fr)
    assert tokenize(cmd.segments) == [Atom("a1"), Atom("LOGIN"), b"alice", b"pw!"]


def test_literal_over_limit_refused_before_it_is_read():
    fr = framing.Framer(max_command_bytes=1000, max_literal_bytes=100)
    fr.feed(b"a1 APPEND INBOX {101}\r\n")
    (ev,) = events(fr)
    assert isinstance(ev, framing.Refused) and ev.tag == b"a1" and ev.code == b"TOOBIG"
    # The client never got "+", so the next line is a new command.
    fr.feed(b"a2 NOOP\r\n")
    assert events(fr) == [framing.Command([b"a2 NOOP"])]


def test_non_synchronising_literal_over_limit_is_skipped_unkept():
    fr = framing.Framer(max_command_bytes=1000, max_literal_bytes=100)
    fr.feed(b"a1 APPEND INBOX {200+}\r\n" + b"x" * 200 + b"\r\na2 NOOP\r\n")
    evs = events(fr)
    assert isinstance(evs[0], framing.Refused) and evs[0].tag == b"a1"
    assert evs[1] == framing.Command([b"a2 NOOP"])
    assert len(fr.buf) == 0


def test_over_long_line_is_refused_and_session_goes_on():
    fr = framing.Framer(max_command_bytes=100)
    fr.feed(b"a1 " + b"x" * 500)
    fr.feed(b"y" * 500 + b"\r\na2 NOOP\r\n")
    evs = events(fr)
    assert isinstance(evs[0], framing.Refused) and evs[0].tag == b"a1"
    assert evs[1] == framing.Command([b"a2 NOOP"])


def test_tokenize_nested_lists_quoted_and_sections():
    v = tokenize([b'a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100> "q\\"x")'])
    assert v == [
        Atom("a"),
        Atom("FETCH"),
        Atom("1:*"),
        [Atom("FLAGS"), Atom("BODY.PEEK[HEADER.FIELDS (From To)]<0.100>"), b'q"x'],
    ]


def test_literal8():
    v = tokenize([b"a APPEND INBOX ~{3}", b"\0\1\2", b""])
    assert isinstance(v[3], Binary) and v[3] == b"\0\1\2"


@pytest.mark.parametrize("line", [b"a (", b"a )", b'a "unterminated', b'a "bad \\x escape"', b"a BODY[y", b"a {3}x", b"a \x01"])
def test_tokenize_errors(line):
    with pytest.raises(ParseError):
        tokenize([line])


def test_writer_strings():
    assert wire.string(b"plain") == b'"plain"'
    assert wire.string(b'q"\\') == b'"q\\"\\\\"'
    assert wire.string(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert wire.string("é".encode()) == b"{2}\r\n\xc3\xa9"
    assert wire.astring(b"INBOX") == b"INBOX" and wire.astring(b"NIL") == b'"NIL"'
    assert wire.seq_set([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"


def test_modified_utf7_round_trip():
    assert mutf7.encode("Entwürfe") == "Entw&APw-rfe"
    assert mutf7.decode("Entw&APw-rfe") == "Entwürfe"
    assert mutf7.encode("a&b") == "a&-b"
    with pytest.raises(mutf7.BadName):
        mutf7.decode("bad&AP")


@given(st.text(max_size=30))
def test_modified_utf7_property(name):
    name = "".join(c for c in name if not 0xD800 <= ord(c) <= 0xDFFF)
    assert mutf7.decode(mutf7.encode(name)) == name


def test_seqset():
    r = seqset.parse("1:3,5,*")
    assert seqset.resolve_msn(r, 7) == [1, 2, 3, 5, 7]
    assert seqset.resolve_uids(seqset.parse("2:*"), [1, 4, 9]) == [4, 9]
    assert seqset.resolve_uids(seqset.parse("20:*"), [1, 4, 9]) == [9]  # n:* includes the last UID
    with pytest.raises(ParseError):
        seqset.parse("0:3")
    with pytest.raises(ParseError):
        seqset.resolve_msn(seqset.parse("9"), 3)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.binary(max_size=80) | st.sampled_from([b"{5}\r\n", b"{3+}\r\n", b"\r\n", b"a1 ", b"(", b'"', b"~{2}\r\n"]), max_size=30
    )
)
def test_fuzz_framing_and_tokenising_never_raise(chunks):
    """Any bytes: the framer yields events and tokenize gives values or ParseError, nothing else."""
    fr = framing.Framer(max_command_bytes=300, max_literal_bytes=50)
    for c in chunks:
        fr.feed(c)
        for ev in events(fr):
            if isinstance(ev, framing.Command):
                try:
                    tokenize(ev.segments)
                except ParseError:
                    pass
    assert len(fr.buf) <= 300 + 80


nested = st.recursive(
    st.none() | st.integers(0, 2**40) | st.binary(max_size=20), lambda c: st.lists(c, max_size=5), max_leaves=30
)


@settings(max_examples=300, deadline=None)
@given(nested, nested)
def test_fuzz_writer_never_raises_on_any_stored_shape(env, bs):
    """ENVELOPE/BODYSTRUCTURE of any shape (old records, odd parsers) serialise without error."""
    assert wire.envelope(env).startswith(b"(")
    assert wire.body(bs).startswith(b"(")
    assert wire.body(bs, False).startswith(b"(")


def test_structure_cache_stays_within_its_byte_budget():
    from mailpair.protocols.imap.fetch import StructureCache

    c = StructureCache(max_bytes=10_000)
    for i in range(1000):
        c.put((i, 0), b"x" * 100)
        assert c.bytes <= 10_000
    assert c.get((999, 0)) == b"x" * 100 and c.get((0, 0)) is None
    assert c.bytes == sum(len(v) for v in c.d.values())


def test_open_bracket_is_an_ordinary_atom_char():
    """RFC 3501 9: `[` is an ATOM-CHAR; only after a fetch attribute does it open a section."""
    assert tokenize([b"a SELECT x[y"]) == [Atom("a"), Atom("SELECT"), Atom("x[y")]
    assert tokenize([b"a LIST x[ (y)"]) == [Atom("a"), Atom("LIST"), Atom("x["), [Atom("y")]]
