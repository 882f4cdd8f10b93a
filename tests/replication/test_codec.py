"""The replication codec over bytes only: the handshake, frames, tags and limits, with no socket.

Every test here runs with socket.socket made to raise (the `no_sockets` fixture, checked by its
own test), so nothing in this module can reach a network. The hypothesis tests mirror the IMAP
reader's: any split of a valid stream decodes to the same messages; damage, replays, drops and
reorders are refused with a clear error and never yield the damaged frame or any after it.
"""

from __future__ import annotations

import socket

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpair.replication import codec
from mailpair.replication.codec import Authenticated, AuthFailed, Channel, Message, PeerError, ProtocolError, Role
from mailpair.store.log import encode_record, record_capacity

SECRET = b"s3cret"


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the codec tests must not open a socket")

    monkeypatch.setattr(socket, "socket", refuse)


def test_the_guard_refuses_sockets():
    with pytest.raises(AssertionError, match="must not open a socket"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def events(ch: Channel) -> list:
    out = []
    while (ev := ch.next_event()) is not None:
        out.append(ev)
    return out


def pair(active_secret: bytes = SECRET, passive_secret: bytes = SECRET) -> tuple[Channel, Channel]:
    """An active and a passive channel after a full handshake, wired through byte strings."""
    active = Channel(Role.ACTIVE, active_secret, "node1", nonce=b"a" * 32)
    passive = Channel(Role.PASSIVE, passive_secret, "node2", nonce=b"p" * 32)
    active.receive_data(passive.data_to_send())  # hello
    assert events(active) == []
    passive.receive_data(active.data_to_send())  # challenge
    assert events(passive) == []
    active.receive_data(passive.data_to_send())  # auth
    assert events(active) == [Authenticated("node2")]
    passive.receive_data(active.data_to_send())  # welcome
    assert events(passive) == [Authenticated("node1")]
    return active, passive


def frames_of(ch: Channel, msgs: list[dict]) -> list[bytes]:
    return [b"".join(ch.send(m)) for m in msgs]


# ---------------------------------------------------------------------- the handshake


def test_same_secret_authenticates_both_ways_and_messages_flow():
    active, passive = pair()
    assert (active.state, passive.state) == (codec.State.OPEN, codec.State.OPEN)
    passive.receive_data(b"".join(frames_of(active, [{"t": "hb", "head": 1}, {"t": "hb", "head": 2}])))
    assert events(passive) == [Message({"t": "hb", "head": 1}), Message({"t": "hb", "head": 2})]
    active.receive_data(b"".join(passive.send({"t": "ack", "lsn": 2})))
    assert events(active) == [Message({"t": "ack", "lsn": 2})]


def test_active_refuses_a_passive_with_the_wrong_secret_and_tells_it():
    active = Channel(Role.ACTIVE, SECRET, "node1")
    passive = Channel(Role.PASSIVE, b"guess", "node2")
    active.receive_data(passive.data_to_send())
    events(active)
    passive.receive_data(active.data_to_send())
    events(passive)
    active.receive_data(passive.data_to_send())
    with pytest.raises(AuthFailed, match="wrong cluster secret"):
        events(active)
    passive.receive_data(active.data_to_send())  # the refusal
    with pytest.raises(AuthFailed, match="the active refused this node: authentication failed"):
        events(passive)


def test_active_refuses_a_passive_of_another_protocol_version():
    active = Channel(Role.ACTIVE, SECRET, "node1")
    active.receive_data(codec.encode({"t": "hello", "v": codec.VERSION + 1, "node": "node2", "nonce": b"n" * 32}))
    with pytest.raises(AuthFailed, match="upgrade both nodes"):
        events(active)
    passive = Channel(Role.PASSIVE, SECRET, "node2")
    passive.receive_data(active.data_to_send())
    with pytest.raises(AuthFailed, match="speaks replication protocol"):
        events(passive)


def test_passive_refuses_an_impostor_active():
    """A fake active that accepts any proof still cannot prove it knows the secret."""
    passive = Channel(Role.PASSIVE, SECRET, "node2")
    passive.data_to_send()
    passive.receive_data(codec.encode({"t": "challenge", "node": "evil", "nonce": b"n" * 32}))
    assert events(passive) == []
    assert passive.data_to_send()  # its proof
    passive.receive_data(codec.encode({"t": "welcome", "mac": b"\0" * 32}))
    with pytest.raises(AuthFailed, match=r"\(evil\) does not know the cluster secret"):
        events(passive)


@pytest.mark.parametrize(
    "first, match",
    [
        ({"t": "list"}, "expected a hello message, got list"),
        ({"t": "hello", "v": codec.VERSION, "node": "x", "nonce": b"short"}, "hello without a valid nonce"),
    ],
)
def test_the_active_takes_nothing_but_a_sound_hello_first(first, match):
    active = Channel(Role.ACTIVE, SECRET, "node1")
    active.receive_data(codec.encode(first))
    with pytest.raises(ProtocolError, match=match):
        events(active)


def test_nothing_but_an_error_can_be_sent_before_the_handshake_ends():
    active = Channel(Role.ACTIVE, SECRET, "node1")
    with pytest.raises(RuntimeError, match="before the handshake ends"):
        active.send({"t": "dbs", "dbs": []})
    assert active.send(codec.error("busy", "later"))


def test_an_error_message_after_the_handshake_is_a_peer_error():
    active, passive = pair()
    passive.receive_data(b"".join(active.send(codec.error("need_seed", "LSN 3 is gone", 3))))
    with pytest.raises(PeerError, match="LSN 3 is gone") as e:
        events(passive)
    assert (e.value.code, e.value.lsn) == ("need_seed", 3)


# ---------------------------------------------------------------------- frames


def test_damaged_frames_are_refused():
    frame = bytearray(codec.encode({"t": "hello", "v": 2, "node": "n", "nonce": b"n" * 32}))
    frame[-1] ^= 1
    head = bytearray(frame)
    head[0] ^= 4  # a damaged length: refused at once, not waited for
    start = (0x7FFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"  # a sound header announcing 2 GiB
    big = start + codec.crc32c.crc32c(start).to_bytes(4, "little")
    for data, match in (
        (bytes(frame), "frame failed its checksum"),
        (bytes(head[: codec.HEADER.size]), "header failed its checksum"),
        (big, "over the limit"),
    ):
        ch = Channel(Role.ACTIVE, SECRET, "node1")
        ch.receive_data(data)
        with pytest.raises(ProtocolError, match=match):
            events(ch)


def test_a_frame_that_is_not_a_message_is_refused():
    for body, match in ((b"\xc1", "does not decode"), (msgpack.packb([1, 2]), "not a message")):
        ch = Channel(Role.ACTIVE, SECRET, "node1")
        ch.receive_data(codec.frame_header(body) + body)
        with pytest.raises(ProtocolError, match=match):
            events(ch)


def test_a_failed_channel_never_yields_again():
    active, passive = pair()
    good = frames_of(active, [{"t": "hb", "head": 1}, {"t": "hb", "head": 2}])
    damaged = bytearray(good[0])
    damaged[codec.HEADER.size + 2] ^= 0x40
    passive.receive_data(bytes(damaged))
    with pytest.raises(ProtocolError, match="checksum"):
        events(passive)
    passive.receive_data(good[1])
    with pytest.raises(ProtocolError, match="failed before"):
        events(passive)
    assert passive.state is codec.State.FAILED
    # its sending side still works: it acknowledges what it stored before the damage
    active.receive_data(b"".join(passive.send({"t": "ack", "lsn": 0})))
    assert events(active) == [Message({"t": "ack", "lsn": 0})]


def test_bytes_needed_asks_for_one_part_at_a_time():
    """A reader that asks for exactly bytes_needed() never holds more than the frame in hand:
    the header first, then the body its length names, then the tag."""
    active, passive = pair()
    (frame,) = frames_of(active, [{"t": "recs", "raws": [b"x" * 100_000]}])
    assert passive.bytes_needed() == codec.HEADER.size
    pos = 0
    seen = []
    while (ev := passive.next_event()) is None:
        n = passive.bytes_needed()
        seen.append(n)
        passive.receive_data(frame[pos : pos + n])
        pos += n
    assert pos == len(frame) and ev == Message({"t": "recs", "raws": [b"x" * 100_000]})
    assert seen == [codec.HEADER.size, len(frame) - codec.HEADER.size - codec.TAG_SIZE, codec.TAG_SIZE]


def test_a_frame_holds_the_largest_record_the_log_accepts():
    """One record filling a whole default segment (a 25 MiB message and its analysis fit it)
    travels in one frame under the authenticated limit."""
    active, passive = pair()
    record = encode_record(1, 1, 0, 20, b"r" * record_capacity(codec.DEFAULT_SEGMENT_SIZE))
    msg = {"t": "recs", "id": b"i" * 16, "first": 1, "raws": [record], "mode": "file", "head": 1, "qb": 0}
    frame = b"".join(active.send(msg))
    assert len(frame) <= codec.MAX_FRAME
    assert len(frame) - len(record) < codec.FRAME_MARGIN
    passive.receive_data(frame)
    (ev,) = events(passive)
    assert ev.body["raws"] == [record]


# ---------------------------------------------------------------------- fuzz

messages = st.lists(
    st.one_of(
        st.builds(lambda h: {"t": "hb", "head": h}, st.integers(0, 2**40)),
        st.builds(
            lambda first, raws: {"t": "recs", "first": first, "raws": raws},
            st.integers(1, 2**40),
            st.lists(st.binary(min_size=0, max_size=300), max_size=5),
        ),
        st.builds(lambda lsn: {"t": "ack", "lsn": lsn, "info": {"status": "Healthy"}}, st.integers(0, 2**40)),
    ),
    min_size=1,
    max_size=8,
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _received(ch: Channel, pieces: list[bytes]) -> tuple[list[dict], BaseException | None]:
    got: list[dict] = []
    try:
        for piece in pieces:
            ch.receive_data(piece)
            while (ev := ch.next_event()) is not None:
                got.append(ev.body)
    except (ProtocolError, PeerError, AuthFailed) as e:
        return got, e
    return got, None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=messages, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_of_a_valid_stream_decodes_to_the_same_messages(msgs, cuts):
    active, passive = pair()
    stream = b"".join(frames_of(active, msgs))
    got, err = _received(passive, _split(stream, cuts))
    assert err is None and got == msgs


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgs=messages,
    where=st.integers(0, 10**9),
    flips=st.lists(st.integers(1, 255), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_corruption_is_refused_and_never_yields_the_frame_or_any_after_it(msgs, where, flips, cuts):
    active, passive = pair()
    frames = frames_of(active, msgs)
    stream = bytearray(b"".join(frames))
    pos = where % len(stream)
    for i, x in enumerate(flips):  # a burst of damaged bytes from pos
        if pos + i < len(stream):
            stream[pos + i] ^= x
    hit = next(i for i, end in enumerate(_ends(frames)) if pos < end)
    got, err = _received(passive, _split(bytes(stream), cuts))
    assert got == msgs[:hit]  # the frames before the damage, nothing from it on
    assert isinstance(err, ProtocolError), err
    assert any(
        clear in str(err) for clear in ("checksum", "authentication tag", "over the limit", "does not decode", "not a message")
    ), err


def _ends(frames: list[bytes]) -> list[int]:
    out, total = [], 0
    for f in frames:
        total += len(f)
        out.append(total)
    return out


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=messages.filter(lambda m: len(m) >= 2), which=st.integers(0, 100), how=st.sampled_from(["replay", "drop", "swap"]))
def test_replayed_dropped_or_reordered_frames_are_refused(msgs, which, how):
    active, passive = pair()
    frames = frames_of(active, msgs)
    i = which % (len(frames) - 1)
    if how == "replay":
        sent = frames[: i + 1] + [frames[i]] + frames[i + 1 :]
        good = i + 1
    elif how == "drop":
        sent = frames[:i] + frames[i + 1 :]
        good = i
    else:
        sent = frames[:i] + [frames[i + 1], frames[i]] + frames[i + 2 :]
        good = i
    got, err = _received(passive, sent)
    assert got == msgs[:good]
    assert isinstance(err, ProtocolError) and "authentication tag" in str(err)


def test_a_frame_altered_with_its_crcs_fixed_up_is_refused():
    """Someone on the path who rewrites a frame and recomputes both checksums is caught by the tag."""
    active, passive = pair()
    (frame,) = frames_of(active, [{"t": "hb", "head": 1}])
    body = msgpack.packb({"t": "hb", "head": 99}, use_bin_type=True)
    passive.receive_data(codec.frame_header(body) + body + frame[-codec.TAG_SIZE :])
    with pytest.raises(ProtocolError, match="authentication tag"):
        events(passive)


def test_frames_of_one_connection_are_refused_on_another():
    """Keys come from both nonces: a frame recorded on one connection fails the tag on the next."""
    active1, _ = pair()
    active2 = Channel(Role.ACTIVE, SECRET, "node1", nonce=b"b" * 32)
    passive2 = Channel(Role.PASSIVE, SECRET, "node2", nonce=b"q" * 32)
    for src, dst in ((passive2, active2), (active2, passive2), (passive2, active2), (active2, passive2)):
        dst.receive_data(src.data_to_send())
        events(dst)
    passive2.receive_data(b"".join(active1.send({"t": "hb", "head": 1})))
    with pytest.raises(ProtocolError, match="authentication tag"):
        events(passive2)


def test_before_authentication_only_small_frames_are_read():
    """Anyone can connect: a header announcing more than HANDSHAKE_MAX_FRAME is refused on its
    own 12 bytes, before a byte of its body is asked for (issue 17); after the handshake the
    same frame is fine."""
    start = (codec.HANDSHAKE_MAX_FRAME + 1).to_bytes(4, "little") + b"\0\0\0\0"
    header = start + codec.crc32c.crc32c(start).to_bytes(4, "little")
    for role in Role:
        ch = Channel(role, SECRET, "n")
        ch.receive_data(header)
        with pytest.raises(ProtocolError, match=f"over the limit of {codec.HANDSHAKE_MAX_FRAME}"):
            events(ch)
    assert codec.HANDSHAKE_MAX_FRAME <= 8 * 1024
    active, passive = pair()
    msg = {"t": "recs", "raws": [b"x" * (codec.HANDSHAKE_MAX_FRAME + 1)]}
    passive.receive_data(b"".join(active.send(msg)))
    assert events(passive) == [Message(msg)]


def test_a_record_of_the_largest_segment_a_node_accepts_fits_one_frame():
    from mailpair.config import MAX_SEGMENT_SIZE
    from mailpair.store.log import record_capacity

    assert record_capacity(MAX_SEGMENT_SIZE) + 64 * 1024 <= codec.MAX_BATCH_BYTES
