"""The DATA reader against a reference: for any byte stream, however it arrives in pieces, the
message ends at the first CRLF.CRLF (counting the start as a line start), is dot-unstuffed, and
everything after the terminator stays unread for the next command. Runs the real reader on a
real asyncio StreamReader fed piece by piece."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from mailpair.protocols.delivery import read_data, unstuff

NEXT = b"QUIT\r\n"


def reference(stream: bytes) -> tuple[bytes, bytes] | None:
    """(content, rest) by the RFC 5321 rule, or None if the stream holds no terminator."""
    i = (b"\r\n" + stream).find(b"\r\n.\r\n")
    if i < 0:
        return None
    return unstuff(stream[: max(i, 0)]), stream[i + 3 :]


async def run(stream: bytes, cuts: list[int], limit: int) -> tuple[bytes | None, bytes]:
    reader = asyncio.StreamReader(limit=1001)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})

    async def feed() -> None:
        for a, b in zip(bounds, bounds[1:], strict=False):
            reader.feed_data(stream[a:b])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    content = await read_data(reader, limit)
    await feeder
    rest = await reader.read()
    return content, rest


pieces = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"ab.", b".\r\n", b"\r\n.\r\n", b"\n.\r\n"]), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(pieces, st.lists(st.integers(0, 10_000), max_size=8))
def test_reader_matches_reference(parts, cuts):
    body = b"".join(parts)
    stream = body + b"\r\n.\r\n" + NEXT
    expect = reference(stream)
    assert expect is not None
    content, rest = asyncio.run(run(stream, cuts, limit=100_000))
    assert (content, rest) == expect


@settings(max_examples=100, deadline=None)
@given(pieces, st.lists(st.integers(0, 10_000), max_size=8))
def test_over_limit_stays_in_step(parts, cuts):
    body = b"x" * 300 + b"".join(parts)
    stream = body + b"\r\n.\r\n" + NEXT
    expect_content, expect_rest = reference(stream)
    content, rest = asyncio.run(run(stream, cuts, limit=200))
    assert rest == expect_rest  # the next command is where it should be
    assert content is None if len(expect_content) > 200 else content == expect_content


def test_crlf_message_round_trip():
    msg = b"Subject: x\r\n\r\n.starts with a dot\r\n..two\r\nlast.\r\n"
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    content, rest = asyncio.run(run(stuffed + b".\r\n" + NEXT, [5, 17, 30], 10_000))
    assert content == msg and rest == NEXT
    content, rest = asyncio.run(run(b".\r\n" + NEXT, [1], 10_000))  # an empty message
    assert content == b"" and rest == NEXT
