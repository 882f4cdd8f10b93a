"""Behaviour checked against the RFC text (issue 16): each test quotes or names the rule it
holds the server to. Sessions run over memory transports (no socket), byte for byte."""

from __future__ import annotations

import base64
import re

import pytest

from .conftest import message

FOLDED = (
    b"From: a@example.test\r\nSubject: folded\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\n'
    b"--foo bar\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b'--foo bar\r\nContent-Type: multipart/alternative;\r\n\tboundary="in\r\n ner"\r\n\r\n'
    b"--in ner\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--in ner--\r\n"
    b"--foo bar--\r\n"
)

DIGEST = (
    b"From: outer@example.test\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: mid@example.test\r\nSubject: the digest\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/digest; boundary="dig"\r\n\r\n'
    b"--dig\r\n\r\nFrom: one@example.test\r\nSubject: first\r\n\r\nfirst body\r\n"
    b"--dig\r\n\r\nFrom: two@example.test\r\nSubject: second\r\n\r\nsecond body\r\n"
    b"--dig--\r\n--outer--\r\n"
)


def _run(memory_host, script):
    async def go():
        c = memory_host.client()
        await c.login()
        try:
            return await script(c)
        finally:
            await c.close()

    return memory_host.run(go())


def _literal_after(out: list[bytes], label: bytes) -> bytes | None:
    """The value of `label {n}` (or NIL) in a FETCH response split into lines."""
    text = b"\r\n".join(out)
    i = text.find(label + b" ")
    assert i >= 0, (label, out)
    rest = text[i + len(label) + 1 :]
    if rest.startswith(b"NIL"):
        return None
    m = re.match(rb"~?\{(\d+)\}\r\n", rest)
    assert m, rest[:80]
    return rest[m.end() : m.end() + int(m.group(1))]


# ---------------------------------------------------------------------------- MIME
def test_folded_boundary_is_unfolded_before_use(memory_host):
    """RFC 5322 2.2.3: unfolding removes the CRLF before WSP, so boundary="foo<CRLF> bar" is
    "foo bar"; RFC 2046 5.1.1: the body is then cut at --foo bar."""
    memory_host.deliver("alice", FOLDED)

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"f FETCH 1 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.1] BINARY.PEEK[2.1])")
        assert b'("BOUNDARY" "foo bar")' in out[0]
        assert b'"ALTERNATIVE" ("BOUNDARY" "in ner")' in out[0]
        assert _literal_after(out, b"BODY[1]") == b"hello"
        assert _literal_after(out, b"BODY[2.1]") == b"inner one"
        assert _literal_after(out, b"BINARY[2.1]") == b"inner one"

    _run(memory_host, script)


def test_digest_inside_message_numbers_and_defaults(memory_host):
    """RFC 3501 6.4.5: part 1 is a message/rfc822 whose body is multipart/digest; its parts
    default to message/rfc822 (RFC 2046 5.1.5), so 1.1.HEADER and 1.1.TEXT are the header and
    text of the first enclosed message."""
    memory_host.deliver("alice", DIGEST)

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"f FETCH 1 (BODY.PEEK[1.1.HEADER] BODY.PEEK[1.1.TEXT] BODY.PEEK[1.2.HEADER] BODY.PEEK[1.HEADER])")
        assert _literal_after(out, b"BODY[1.1.HEADER]") == b"From: one@example.test\r\nSubject: first\r\n\r\n"
        assert _literal_after(out, b"BODY[1.1.TEXT]") == b"first body"
        assert _literal_after(out, b"BODY[1.2.HEADER]") == b"From: two@example.test\r\nSubject: second\r\n\r\n"
        assert _literal_after(out, b"BODY[1.HEADER]").startswith(b"From: mid@example.test")
        bs = (await c.cmd(b"g FETCH 1 BODYSTRUCTURE"))[0]
        assert bs.count(b'"MESSAGE" "RFC822"') == 3  # the outer part and both digest parts

    _run(memory_host, script)


def test_nul_in_a_part_never_goes_out_in_an_ordinary_literal(memory_host):
    """RFC 9051 4.3: binary (NUL) only in a literal8 answering BINARY[...]; RFC 3516 4.3 lets the
    server store the part in a transfer encoding: BODY[2] is its base64, BINARY[2] the bytes."""
    content = b"A\x00B\x00\xffC"
    raw = (
        b"From: a@example.test\r\nSubject: nul\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + content + b"\r\n--x--\r\n"
    )

    async def script(c):
        out = await c.append(b"a", b"INBOX", raw, literal8=True)
        assert out[-1].startswith(b"a OK")
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"f FETCH 1 (BODY.PEEK[2] BODY.PEEK[] RFC822.SIZE)")
        text = b"\r\n".join(out)
        assert b"\x00" not in text
        assert base64.b64decode(_literal_after(out, b"BODY[2]")) == content
        out = await c.cmd(b"g FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
        assert _literal_after(out, b"BINARY[2]") == content
        assert b"~{%d}" % len(content) in out[0]
        assert b"BINARY.SIZE[2] %d" % len(content) in b"\r\n".join(out)
        mime = await c.cmd(b"h FETCH 1 BODY.PEEK[2.MIME]")
        assert b"Content-Transfer-Encoding: base64" in _literal_after(mime, b"BODY[2.MIME]")

    _run(memory_host, script)


# ---------------------------------------------------------------------------- grammar
def test_open_bracket_is_an_atom_char(memory_host):
    """RFC 3501 9: ATOM-CHAR is any CHAR except atom-specials, and `[` is not one of them; the
    name is a valid astring (though not valid modified UTF-7, 5.1.3: "&'" opens no base64), so
    SELECT answers NO and LIST answers OK, never BAD."""
    name = b"!#$&'+,-.0123456789:;<=>?@^_`|[}"

    async def script(c):
        assert (await c.cmd(b"a SELECT " + name))[-1].startswith(b"a NO")
        assert (await c.cmd(b'b LIST "" ' + name))[-1].startswith(b"b OK")
        assert (await c.cmd(b'b2 LIST "" ' + name + b" RETURN (CHILDREN)"))[-1].startswith(b"b2 OK")
        assert (await c.cmd(b'b3 LSUB "" ' + name))[-1].startswith(b"b3 OK")
        plain = name.replace(b"&", b"&-")  # the same characters as valid modified UTF-7
        assert (await c.cmd(b"c CREATE " + plain))[-1].startswith(b"c OK")
        out = await c.cmd(b'd LIST "" ' + plain)
        assert any(plain in line for line in out[:-1]), out
        assert (await c.cmd(b"e SELECT " + plain))[-1].startswith(b"e OK")

    _run(memory_host, script)


# ---------------------------------------------------------------------------- CONDSTORE
def test_first_condstore_enabling_command_reports_highestmodseq(memory_host):
    """RFC 7162 3.1: the first CONDSTORE-enabling command (here FETCH ... MODSEQ) issued while a
    mailbox is selected makes the server send OK [HIGHESTMODSEQ n]; later ones do not."""
    for i in range(3):
        memory_host.deliver("alice", message(i))

    async def script(c):
        out = await c.cmd(b"s SELECT INBOX")
        hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\r\n".join(out)).group(1))
        out = await c.cmd(b"f FETCH 1 MODSEQ")
        assert out[0] == b"* OK [HIGHESTMODSEQ %d] highest modseq" % hms
        assert out[1].startswith(b"* 1 FETCH (MODSEQ (")
        out = await c.cmd(b"g FETCH 2 MODSEQ")
        assert not any(b"HIGHESTMODSEQ" in x for x in out)
        # STATUS (HIGHESTMODSEQ) is CONDSTORE-enabling too: another session, its first one.
        other = memory_host.client()
        await other.login()
        await other.cmd(b"s SELECT INBOX")
        out = await other.cmd(b"t STATUS INBOX (HIGHESTMODSEQ)")
        assert out[0].startswith(b"* OK [HIGHESTMODSEQ "), out
        await other.close()

    _run(memory_host, script)


def test_esearch_min_max_with_modseq_gives_that_messages_modseq(memory_host):
    """RFC 7162 3.1.5: with RETURN (MIN) or (MAX) only, MODSEQ is the highest mod-sequence of
    the message(s) returned, not of everything that matched."""
    for i in range(3):
        memory_host.deliver("alice", message(i))

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        await c.cmd(b"t STORE 3 +FLAGS (\\Flagged)")  # message 3 now has the highest modseq
        out = await c.cmd(b"m FETCH 1:3 MODSEQ")
        mods = {int(k): int(v) for k, v in re.findall(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)", b"\r\n".join(out))}
        out = await c.cmd(b"a SEARCH RETURN (MIN) MODSEQ 1")
        assert re.search(rb"MIN 1 MODSEQ %d" % mods[1], out[0]), out
        out = await c.cmd(b"b SEARCH RETURN (MAX) MODSEQ 1")
        assert re.search(rb"MAX 3 MODSEQ %d" % mods[3], out[0]), out
        out = await c.cmd(b"c SEARCH RETURN (MIN COUNT) MODSEQ 1")
        assert re.search(rb"MODSEQ %d" % max(mods.values()), out[0]), out

    _run(memory_host, script)


# ---------------------------------------------------------------------------- LIST / LSUB
def test_recursivematch_needs_a_real_selection_option(memory_host):
    """RFC 5258 3: RECURSIVEMATCH must not be the only selection option, and REMOTE alone does
    not make it valid."""

    async def script(c):
        assert (await c.cmd(b'a LIST (RECURSIVEMATCH) "" *'))[-1].startswith(b"a BAD")
        assert (await c.cmd(b'b LIST (RECURSIVEMATCH REMOTE) "" *'))[-1].startswith(b"b BAD")
        assert (await c.cmd(b'c LIST (SUBSCRIBED RECURSIVEMATCH) "" *'))[-1].startswith(b"c OK")

    _run(memory_host, script)


def test_subscribed_recursivematch_lists_parents_with_childinfo(memory_host):
    """RFC 5258 3 and 5: with (SUBSCRIBED RECURSIVEMATCH) and "%", an unsubscribed parent of a
    subscribed child is returned with CHILDINFO ("SUBSCRIBED"); a subscribed mailbox is
    returned with \\Subscribed; an unrelated mailbox is not returned."""

    async def script(c):
        for name in (b"Fruit", b"Fruit/Apple", b"Tofu", b"Other"):
            await c.cmd(b"c CREATE " + name)
        await c.cmd(b"s SUBSCRIBE Fruit/Apple")
        await c.cmd(b"t SUBSCRIBE Tofu")
        out = await c.cmd(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
        fruit = [x for x in out if x.endswith(b'"/" Fruit ("CHILDINFO" ("SUBSCRIBED"))')]
        assert len(fruit) == 1 and b"\\Subscribed" not in fruit[0], out
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Tofu' in out, out
        assert not any(b"Other" in x for x in out), out
        # With "*" the child itself is returned, so the parent needs no CHILDINFO line.
        out = await c.cmd(b'm LIST (SUBSCRIBED RECURSIVEMATCH) "" *')
        assert not any(b"CHILDINFO" in x for x in out), out

    _run(memory_host, script)


def test_lsub_percent_shows_noselect_parent(memory_host):
    """RFC 3501 6.3.9: "foo/bar" subscribed, "foo" not: LSUB with "%" returns foo, flagged
    \\Noselect, and not foo/bar."""

    async def script(c):
        await c.cmd(b"c CREATE foo/bar")
        await c.cmd(b"s SUBSCRIBE foo/bar")
        out = await c.cmd(b'l LSUB "" %')
        assert b'* LSUB (\\Noselect) "/" foo' in out, out
        assert not any(b"foo/bar" in x for x in out)
        out = await c.cmd(b'm LSUB "" *')
        assert b'* LSUB () "/" foo/bar' in out, out

    _run(memory_host, script)


# ---------------------------------------------------------------------------- MOVE, EXAMINE
def test_move_into_the_selected_mailbox(memory_host):
    """RFC 6851 3.3: MOVE to the selected mailbox is allowed: COPYUID, EXPUNGE of the
    originals, then EXISTS for the new copies, all before the tagged OK."""
    for i in range(2):
        memory_host.deliver("alice", message(i))

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"m UID MOVE 1 INBOX")
        assert out[-1].startswith(b"m OK"), out
        assert re.match(rb"\* OK \[COPYUID \d+ 1 3\]", out[0]), out
        assert b"* 1 EXPUNGE" in out and b"* 2 EXISTS" in out, out
        assert out.index(b"* 1 EXPUNGE") < out.index(b"* 2 EXISTS")
        out = await c.cmd(b"f FETCH 1:* UID")
        assert [int(u) for u in re.findall(rb"UID (\d+)", b"".join(out))] == [2, 3]

    _run(memory_host, script)


def test_examine_reports_recent_without_claiming(memory_host):
    """RFC 3501 6.3.2: EXAMINE's responses are SELECT's, RECENT included; a read-only session
    takes no \\Recent away, so a later SELECT still sees the messages as recent (2.3.2)."""
    for i in range(2):
        memory_host.deliver("alice", message(i))

    async def script(c):
        out = await c.cmd(b"s STATUS INBOX (RECENT)")
        assert b"RECENT 2" in out[0]
        out = await c.cmd(b"e EXAMINE INBOX")
        assert b"* 2 RECENT" in out, out
        out = await c.cmd(b"f SELECT INBOX")
        assert b"* 2 RECENT" in out, out

    _run(memory_host, script)


def test_new_keyword_announced_to_every_session_with_the_mailbox(memory_host):
    """RFC 9051 7.3.5 / RFC 3501 7.2.6: FLAGS lists the flags applicable to the mailbox; when a
    STORE adds a keyword not yet in it, FLAGS (and PERMANENTFLAGS) are sent again before the
    FETCH that shows the keyword, to this session and to every other one with it selected."""
    memory_host.deliver("alice", message(1))

    async def script(c):
        other = memory_host.client()
        await other.login()
        await other.cmd(b"s SELECT INBOX")
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"t STORE 1 +FLAGS ($Project)")
        flags_at = next(i for i, x in enumerate(out) if x.startswith(b"* FLAGS"))
        fetch_at = next(i for i, x in enumerate(out) if b"FETCH" in x)
        assert flags_at < fetch_at and b"$Project" in out[flags_at], out
        assert any(x.startswith(b"* OK [PERMANENTFLAGS (") and b"$Project" in x for x in out), out
        out = await other.cmd(b"n NOOP")
        flags_at = next(i for i, x in enumerate(out) if x.startswith(b"* FLAGS"))
        fetch_at = next(i for i, x in enumerate(out) if b"FETCH" in x)
        assert flags_at < fetch_at and b"$Project" in out[flags_at], out
        # Announced once: setting it again says nothing new.
        out = await c.cmd(b"u STORE 1 FLAGS ($Project \\Seen)")
        assert not any(x.startswith(b"* FLAGS") for x in out), out
        await other.close()

    _run(memory_host, script)


@pytest.mark.parametrize("name", [b"[", b"a[b", b"x]y"])
def test_brackets_in_mailbox_names_round_trip(memory_host, name):
    """ASTRING-CHAR includes `]` (resp-specials) and ATOM-CHAR includes `[`."""

    async def script(c):
        assert (await c.cmd(b"c CREATE " + name))[-1].startswith(b"c OK")
        assert (await c.cmd(b"s SELECT " + name))[-1].startswith(b"s OK")

    _run(memory_host, script)


# ---------------------------------------------------------------------------- ENVELOPE, SORT, SEARCH
def _envelope_of(memory_host, to: bytes) -> bytes:
    memory_host.deliver("alice", b"From: a@example.test\r\nTo: " + to + b"\r\nSubject: s\r\n\r\nbody\r\n")

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"f FETCH * ENVELOPE")
        return out[0]

    return _run(memory_host, script)


@pytest.mark.parametrize(
    "to, expected",
    [
        # RFC 5322 A.1.3 group, with comments in odd places; RFC 3501 7.4.2 group markers.
        (
            b"A Group(Some people):Chris Jones <c@(Chris's host.)public.example>, joe@example.org,"
            b" John <jdoe@one.test> (my dear friend); (the end of the group)",
            b'((NIL NIL "A Group" NIL)("Chris Jones" NIL "c" "public.example")(NIL NIL "joe" "example.org")'
            b'("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL))',
        ),
        # A group in the middle of a list, quoted name holding a comma.
        (
            b'a@b.test, Friends: c@d.test, "F, G" <f@g.test>;, x@y.test',
            b'((NIL NIL "a" "b.test")(NIL NIL "Friends" NIL)(NIL NIL "c" "d.test")("F, G" NIL "f" "g.test")'
            b'(NIL NIL NIL NIL)(NIL NIL "x" "y.test"))',
        ),
        (b"undisclosed-recipients:;", b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'),
        # RFC 5322 A.5: comments are not the address; a name in a comment stands in for a missing phrase.
        (b"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", b'(("Pete" NIL "pete" "silly.test"))'),
        (b"bob@example.test (Bob Smith)", b'(("Bob Smith" NIL "bob" "example.test"))'),
        # RFC 5322 4.4 obs-route, RFC 3501 addr-adl.
        (b"<@route1,@route2:user@host.test>", b'((NIL "@route1,@route2" "user" "host.test"))'),
        (b"Mary Smith <@node.test:mary@example.net>", b'(("Mary Smith" "@node.test" "mary" "example.net"))'),
        # RFC 5322 4.4 obs-domain: white space around the dots is not part of the domain.
        (b"jdoe@test  . example", b'((NIL NIL "jdoe" "test.example"))'),
        (b'"Giant; \\"Big\\" Box" <sysservices@example.net>', b'(("Giant; \\"Big\\" Box" NIL "sysservices" "example.net"))'),
        # No domain: not NIL (that would read as a group marker).
        (b"justlocal", b'((NIL NIL "justlocal" ".MISSING-HOST-NAME."))'),
    ],
)
def test_envelope_addresses_follow_the_rfc5322_grammar(memory_host, to, expected):
    env = _envelope_of(memory_host, to)
    # ENVELOPE: date subject from sender reply-to TO ...; the From/Sender/Reply-To lists come first.
    frm = b'((NIL NIL "a" "example.test"))'
    assert env.count(frm) == 3, env
    to_field = env.split(frm + b" " + frm + b" " + frm + b" ", 1)[1]
    assert to_field.startswith(expected + b" NIL NIL NIL NIL)"), (to_field, expected)


@pytest.mark.parametrize(
    "subject, base",
    [
        ("Re: hello", "hello"),
        ("RE: [list] Re: hello (fwd)", "hello"),  # leaders repeat (5), trailer (2)
        ("[list] Re: hello", "hello"),  # subj-leader = *subj-blob subj-refwd
        ("[Fwd: Re: [x] hello]", "hello"),  # (6) then (2)-(5) again
        ("Fwd: [x]", "[x]"),  # (4): a blob that is all that is left stays
        ("Re:", ""),
        ("  fw:   subject  (fwd) (FWD)  ", "subject"),
        ("re [blob]: x", "x"),  # subj-refwd = re *WSP [subj-blob] ":"
        ("Re:Re:  RE : x", "x"),  # subj-refwd allows *WSP between "re" and ":"
        ("[a][b] y", "y"),
        ("=?utf-8?q?Re=3A_caf=C3=A9?=", "café"),  # (1) decoded first
    ],
)
def test_sort_base_subject(subject, base):
    """RFC 5256 section 2.1, steps (1) to (6)."""
    from mailpair.protocols.imap.sort import base_subject

    assert base_subject(subject.encode()) == base


def test_sort_by_from_skips_group_markers_and_uses_the_address_grammar(memory_host):
    """RFC 5256 3: FROM sorts by the addr-mailbox of the first From address; a group's start
    marker is not an address."""
    memory_host.deliver("alice", b"From: Team: zed@example.test;\r\nSubject: 1\r\n\r\nx\r\n")
    memory_host.deliver("alice", b"From: (comment) amy@example.test\r\nSubject: 2\r\n\r\nx\r\n")
    memory_host.deliver("alice", b"From: Mo <mo@example.test>\r\nSubject: 3\r\n\r\nx\r\n")

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        out = await c.cmd(b"o SORT (FROM) UTF-8 ALL")
        assert out[0] == b"* SORT 2 3 1", out
        out = await c.cmd(b"p SORT (SUBJECT) UTF-8 ALL")
        assert out[0] == b"* SORT 1 2 3", out

    _run(memory_host, script)


def test_search_address_matching(memory_host):
    """RFC 9051 6.4.4: FROM/TO/CC/BCC match a string in the envelope's address field: the
    display name (decoded), the address, or `name <address>`, however the header was written
    (folded, quoted, with comments)."""
    memory_host.deliver(
        "alice",
        b'From: "Doe,\r\n John" <john.doe@example.test>\r\nTo: Ops: =?utf-8?q?J=C3=B6rg?= <jorg@example.test>;\r\n'
        b"Cc: pat@example.test (Pat Kay)\r\nSubject: x\r\n\r\nbody\r\n",
    )
    memory_host.deliver("alice", b"From: other@example.test\r\nTo: nobody@example.test\r\nSubject: y\r\n\r\nbody\r\n")

    async def script(c):
        await c.cmd(b"s SELECT INBOX")
        for criterion in (
            b'FROM "Doe, John"',
            b"FROM john.doe@example.test",
            b'FROM "Doe, John <john.doe@"',
            b"TO jorg@example",
            b"TO Ops",
            b"CC pat@example.test",
            b'CC "Pat Kay <pat@"',
        ):
            out = await c.cmd(b"q SEARCH " + criterion)
            assert out[0] == b"* SEARCH 1", (criterion, out)
        c.t.send(b"r SEARCH CHARSET UTF-8 TO {5}\r\n")
        await c.t.wait_for(b"+ ")
        c.t.send("Jörg".encode() + b"\r\n")
        out = (await c.t.wait_for(b"r ")).split(b"\r\n")
        assert out[0] == b"* SEARCH 1", out

    _run(memory_host, script)
