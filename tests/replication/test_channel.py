"""The replication channel on real loopback sockets: the Link drives the codec's handshake both
ways and its tags hold against a man in the middle; inspection of records (checksum, gaps, epoch,
database id). The codec itself is tested without sockets in test_codec.py."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mailpair.replication import codec, link
from mailpair.replication.codec import Channel, Role
from mailpair.replication.inspect import InspectionFailed, inspect_batch
from mailpair.store.log import encode_record

DB = uuid.uuid4().bytes


async def _exchange(active_secret: bytes, passive_secret: bytes):
    results = {}

    async def handle(reader, writer):
        conn = link.Link(reader, writer, Channel(Role.ACTIVE, active_secret, "node1"))
        try:
            results["active"] = await conn.handshake(5)
        except Exception as e:
            results["active"] = e
        conn.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await link.connect("127.0.0.1", port, passive_secret, "node2", 5, 5)
        results["passive"] = conn.peer
        conn.close()
    except Exception as e:
        results["passive"] = e
    await asyncio.sleep(0.05)
    server.close()
    return results


def test_same_secret_authenticates_both_ways():
    r = asyncio.run(_exchange(b"s3cret", b"s3cret"))
    assert r == {"active": "node2", "passive": "node1"}


def test_active_refuses_a_passive_with_the_wrong_secret():
    r = asyncio.run(_exchange(b"s3cret", b"guess"))
    assert isinstance(r["active"], codec.AuthFailed) and "wrong cluster secret" in str(r["active"])
    assert isinstance(r["passive"], codec.AuthFailed) and "refused" in str(r["passive"])


def rec(lsn: int, epoch: int = 1) -> bytes:
    return encode_record(lsn, epoch, 1_700_000_000_000_000 + lsn, 20, b"payload %d" % lsn)


def test_inspection_accepts_a_clean_batch():
    recs = inspect_batch([rec(5), rec(6), rec(7, epoch=2)], 5, 1, DB, DB)
    assert [r.lsn for r in recs] == [5, 6, 7] and recs[-1].epoch == 2


@pytest.mark.parametrize(
    "raws, expected, epoch, batch_db, match",
    [
        ([rec(5), rec(7)], 5, 1, DB, "LSN 7 where LSN 6 belongs"),  # gap
        ([rec(5), rec(5)], 5, 1, DB, "LSN 5 where LSN 6 belongs"),  # repeat
        ([rec(6)], 5, 1, DB, "LSN 6 where LSN 5 belongs"),
        ([rec(5, epoch=1)], 5, 2, DB, "epoch 1, older than epoch 2"),  # old epoch
        ([rec(5)], 5, 1, uuid.uuid4().bytes, "another database"),
    ],
)
def test_inspection_refuses_gaps_repeats_old_epochs_and_foreign_records(raws, expected, epoch, batch_db, match):
    with pytest.raises(InspectionFailed, match=match):
        inspect_batch(raws, expected, epoch, DB, batch_db)


def test_inspection_catches_every_single_bit_flip():
    raw = rec(9)
    for bit in range(len(raw.rstrip(b"\0")) * 8):
        damaged = bytearray(raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(InspectionFailed) as e:
            inspect_batch([bytes(damaged)], 9, 1, DB, DB)
        assert e.value.lsn == 9


def test_after_authentication_frames_cannot_be_altered_replayed_or_reordered():
    """Someone on the path who rewrites a frame and fixes up its CRC, or sends a frame again, is
    caught by the per-connection tag; untouched frames pass in order."""

    async def run(tamper: str):
        got: list = []

        async def active(reader, writer):
            conn = link.Link(reader, writer, Channel(Role.ACTIVE, b"s3cret", "node1"))
            await conn.handshake(5)
            for i in range(3):
                await conn.send({"t": "hb", "head": i})
            conn.close()

        async def path(reader, writer):  # a man in the middle between the passive and the active
            up_r, up_w = await asyncio.open_connection("127.0.0.1", active_port)

            async def upstream():
                while data := await reader.read(1 << 16):
                    up_w.write(data)
                up_w.close()

            async def downstream():  # frame by frame: challenge and welcome, then tagged frames
                n = 0
                try:
                    while True:
                        head = await up_r.readexactly(codec.HEADER.size)
                        length = codec.HEADER.unpack(head)[0]
                        frame = head + await up_r.readexactly(length + (codec.TAG_SIZE if n >= 2 else 0))
                        if n == 2 and tamper:
                            frame = _tampered(frame, tamper)
                        writer.write(frame)
                        n += 1
                except asyncio.IncompleteReadError:
                    writer.close()

            await asyncio.gather(upstream(), downstream())

        s_active = await asyncio.start_server(active, "127.0.0.1", 0)
        active_port = s_active.sockets[0].getsockname()[1]
        s_path = await asyncio.start_server(path, "127.0.0.1", 0)
        conn = await link.connect("127.0.0.1", s_path.sockets[0].getsockname()[1], b"s3cret", "node2", 5, 5)
        try:
            while len(got) < 3:
                got.append((await conn.receive(5))["head"])
        except (codec.ProtocolError, asyncio.IncompleteReadError) as e:
            got.append(e)
        conn.close()
        s_active.close()
        s_path.close()
        return got

    assert asyncio.run(run("")) == [0, 1, 2]
    for tamper in ("alter", "replay"):
        got = asyncio.run(run(tamper))
        assert isinstance(got[-1], codec.ProtocolError) and "authentication tag" in str(got[-1]), (tamper, got)


def _tampered(frame: bytes, how: str) -> bytes:
    """Change a tagged frame's content and fix up its CRC, or send it twice."""
    import msgpack

    if how == "replay":
        return frame + frame
    body = msgpack.packb({"t": "hb", "head": 99}, use_bin_type=True)
    return codec.frame_header(body) + body + frame[-codec.TAG_SIZE :]
