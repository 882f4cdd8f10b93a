"""The witness contract, run against every backend: the in-memory reference, a directory and a
private etcd. A backend is a witness only if it passes all of it."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request

import pytest

from mailpair.cluster.witness import MemoryWitness, Token, Witness, WitnessError, WitnessState
from mailpair.cluster.witness_dir import DirectoryWitness
from mailpair.cluster.witness_etcd import EtcdWitness


@pytest.fixture(params=["memory", "directory", "etcd"])
def make_witness(request, tmp_path):
    """A factory of witness clients that all see one store (two nodes' views of one witness)."""
    made: list[Witness] = []
    if request.param == "memory":
        shared = MemoryWitness()

        def make() -> Witness:
            return shared

    elif request.param == "directory":

        def make() -> Witness:
            w = DirectoryWitness(tmp_path, timeout=5.0, keep=3)
            made.append(w)
            return w

    else:
        url = request.getfixturevalue("etcd")

        def make() -> Witness:
            w = EtcdWitness([url], key="/test/witness", timeout=5.0)
            made.append(w)
            return w

    async def close_all() -> None:
        for w in made:
            await w.close()

    make.close_all = close_all
    return make


def run(make, go) -> None:
    """Run a test's coroutine and close the clients it made in the same event loop."""

    async def wrapped():
        try:
            await go()
        finally:
            await make.close_all()

    asyncio.run(wrapped())


def first(holder: str = "node1") -> WitnessState:
    return WitnessState().successor(epoch=1, holder=holder, reserved_lsn=10, reserved_uid=100)


def test_fresh_witness_reads_empty_and_first_write_wins(make_witness):
    async def go():
        w = make_witness()
        state, t0 = await w.read()
        assert state is None
        s1 = first()
        t1 = await w.compare_and_swap(t0, s1)
        assert t1
        state, token = await w.read()
        assert state == s1 and token == t1
        # a second first write, from the empty witness's token, loses: nothing is overwritten
        assert await w.compare_and_swap(t0, first("node2")) is None
        assert (await w.read()) == (s1, t1)

    run(make_witness, go)


def test_exactly_one_of_two_writers_from_one_version_wins(make_witness):
    async def go():
        a, b = make_witness(), make_witness()
        _, t0 = await a.read()
        await a.compare_and_swap(t0, first())
        for _ in range(5):
            sa, ta = await a.read()
            sb, tb = await b.read()
            assert (sa, ta) == (sb, tb)
            na = sa.successor(holder="node1")
            nb = sb.successor(epoch=sb.epoch + 1, holder="node2")
            ra, rb = await asyncio.gather(a.compare_and_swap(ta, na), b.compare_and_swap(tb, nb))
            assert bool(ra) != bool(rb), (ra, rb)
            now, token = await a.read()
            assert now == (na if ra else nb)
            assert token == (ra or rb)
            assert now.version == sa.version + 1

    run(make_witness, go)


def test_state_round_trips_every_field(make_witness):
    async def go():
        w = make_witness()
        _, t = await w.read()
        s = WitnessState().successor(
            epoch=7,
            holder="node2",
            reserved_lsn=12345,
            reserved_uid=99,
            mode="async",
            async_from_lsn=12000,
            both_stored_lsn=11999,
        )
        assert await w.compare_and_swap(t, s)
        assert (await w.read())[0] == s

    run(make_witness, go)


def test_a_lost_reply_is_resolved_by_reading_back_the_nonce(make_witness):
    """The write lands but its answer is lost: compare_and_swap still reports the win."""

    async def go():
        w = make_witness()
        _, t0 = await w.read()
        real = w._cas

        async def lost_reply(expected, new):
            await real(expected, new)
            raise WitnessError("reply lost")

        w._cas = lost_reply
        try:
            s1 = first()
            token = await w.compare_and_swap(t0, s1)
            assert token and (await w.read()) == (s1, token)
            # and a write that did NOT land (stale token) is reported as lost, not as won
            stale = s1.successor(holder="node2")
            assert await w.compare_and_swap(t0, stale) is None
        finally:
            w._cas = real

    run(make_witness, go)


def test_every_call_is_bounded_by_the_timeout(make_witness):
    async def go():
        w = make_witness()
        w.timeout = 0.2

        async def hang(*args):
            await asyncio.sleep(10)

        w._read = hang
        w._cas = hang
        with pytest.raises(WitnessError, match="timed out|unknown"):
            await w.read()
        with pytest.raises(WitnessError, match="unknown"):
            await w.compare_and_swap(Token(0), first())

    run(make_witness, go)


def test_etcd_key_carries_no_lease(etcd):
    url = etcd

    async def go():
        w = EtcdWitness([url], key="/test/witness")
        try:
            _, t = await w.read()
            assert await w.compare_and_swap(t, first())
        finally:
            await w.close()

    asyncio.run(go())
    body = json.dumps({"key": base64.b64encode(b"/test/witness").decode()}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/range", data=body), timeout=5) as r:
        kv = json.loads(r.read())["kvs"][0]
    # The gateway omits zero fields: no "lease" means lease 0, a key that never expires.
    assert int(kv.get("lease", 0)) == 0


def test_unreachable_etcd_is_a_witness_error():
    async def go():
        w = EtcdWitness(["http://127.0.0.1:9"], timeout=1.0)
        try:
            with pytest.raises(WitnessError):
                await w.read()
        finally:
            await w.close()

    asyncio.run(go())
