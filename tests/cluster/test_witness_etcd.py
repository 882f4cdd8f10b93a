"""The etcd witness beyond the shared contract: two processes racing on one key of a private
etcd win each version exactly once; a dead endpoint among several is skipped."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

from mailpair.cluster.witness import WitnessState
from mailpair.cluster.witness_etcd import EtcdWitness

RACER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from mailpair.cluster.witness import WitnessState
    from mailpair.cluster.witness_etcd import EtcdWitness
    url, name, rounds, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    async def main():
        w = EtcdWitness([url], key="/race/witness", timeout=10)
        open(go + '.' + name, 'w').close()  # ready: the test starts both at once
        while not os.path.exists(go):
            await asyncio.sleep(0.001)
        out = []
        for _ in range(rounds):
            state, token = await w.read()
            new = (state or WitnessState()).successor(holder=name)
            won = await w.compare_and_swap(token, new)
            out.append([token.value, won.value if won else None, new.version])
        await w.close()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_two_processes_racing_on_etcd_exactly_one_wins_each_version(etcd, tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, etcd, name, "300", str(go)], stdout=subprocess.PIPE)
        for name in ("node1", "node2")
    ]
    # Both racers ready before either starts: on a loaded machine one process may start seconds
    # after the other, and a fixed sleep let the first run all its rounds alone.
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.{n}").exists() for n in ("node1", "node2")) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    versions: dict[int, str] = {}
    contested = []
    for name, p in zip(("node1", "node2"), procs, strict=True):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        for expected, won, version in json.loads(out):
            contested.append(expected)
            if won is not None:
                assert version not in versions, f"version {version} won by {versions[version]} and {name}"
                versions[version] = name
    assert sorted(versions) == list(range(1, len(versions) + 1))  # one chain, no gap, no overwrite
    assert len(versions) >= 300
    assert len(set(contested)) < len(contested), "the two processes never raced"

    async def final():
        w = EtcdWitness([etcd], key="/race/witness")
        try:
            return await w.read()
        finally:
            await w.close()

    state, _ = asyncio.run(final())
    assert state.version == max(versions) and state.holder == versions[state.version]


def test_several_endpoints_skip_a_dead_one(etcd):
    async def go():
        w = EtcdWitness(["http://127.0.0.1:9", etcd], key="/multi/witness", timeout=5)
        try:
            state, token = await w.read()
            assert state is None
            new = WitnessState().successor(holder="node1", epoch=1)
            assert await w.compare_and_swap(token, new)
            assert (await w.read())[0] == new
        finally:
            await w.close()

    asyncio.run(go())
