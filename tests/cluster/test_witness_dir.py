"""The directory witness beyond the shared contract: real processes racing on one directory, a
link whose reply is lost, torn temp files, durability and pruning."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from mailpair.cluster import witness_dir
from mailpair.cluster.witness import Token, WitnessError, WitnessState
from mailpair.cluster.witness_dir import DirectoryWitness

RACER = textwrap.dedent(
    """
    import json, os, sys, time
    from mailpair.cluster.witness_dir import DirectoryWitness
    path, name, rounds, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    w = DirectoryWitness(path, keep=8)
    open(go + '.' + name, 'w').close()  # ready: the test starts both at once
    while not os.path.exists(go):
        time.sleep(0.001)
    out = []
    for _ in range(rounds):
        state, token = w.read_sync()
        new = state.successor(holder=name, epoch=state.epoch + 1)
        won = w.cas_sync(token, new)
        out.append([token.value, won.value if won else None, new.nonce])
    print(json.dumps(out))
    """
)


def test_two_processes_racing_exactly_one_wins_each_version(tmp_path):
    w = DirectoryWitness(tmp_path / "w", keep=4)
    (tmp_path / "w").mkdir()
    assert w.cas_sync(Token(0), WitnessState().successor(epoch=1, holder="init"))
    go = tmp_path / "go"
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "w"), name, "400", str(go)], stdout=subprocess.PIPE, env=env
        )
        for name in ("node1", "node2")
    ]
    # Both racers ready before either starts: on a loaded machine one process may start seconds
    # after the other, and a fixed sleep let the first run all its rounds alone.
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go.{n}").exists() for n in ("node1", "node2")) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = {}
    for name, p in zip(("node1", "node2"), procs, strict=True):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results[name] = json.loads(out)
    winners: dict[int, str] = {}
    nonces: dict[int, str] = {}
    for name, rows in results.items():
        for expected, won, nonce in rows:
            if won is not None:
                assert won == expected + 1
                assert won not in winners, f"version {won} won by {winners[won]} and {name}"
                winners[won], nonces[won] = name, nonce
    contested = [r[0] for rows in results.values() for r in rows]
    assert len(winners) >= 400  # every round someone progressed; losses were real races
    assert len(set(contested)) < len(contested), "the two processes never raced for one version"
    # the versions form one chain with no gap, and the newest file holds its winner's state
    assert sorted(winners) == list(range(2, 2 + len(winners)))
    state, token = w.read_sync()
    assert token.value == max(winners) and state.nonce == nonces[token.value]
    assert state.version == token.value  # one version per file: nothing was overwritten


def test_a_link_whose_reply_is_lost_counts_as_won(tmp_path, monkeypatch):
    """NFS may make the link and lose the answer (EIO), or retry it and answer EEXIST."""
    w = DirectoryWitness(tmp_path)
    real_link = os.link
    for err in (errno.EIO, errno.EEXIST):
        state, token = w.read_sync()
        new = (state or WitnessState()).successor(holder="node1")

        def link_then_fail(src, dst, err=err):
            real_link(src, dst)
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(witness_dir.os, "link", link_then_fail)
        assert w.cas_sync(token, new) == Token(token.value + 1)
        monkeypatch.setattr(witness_dir.os, "link", real_link)
        assert w.read_sync() == (new, Token(token.value + 1))


def test_an_error_before_the_link_is_not_a_win(tmp_path, monkeypatch):
    w = DirectoryWitness(tmp_path)

    def link_fails(src, dst):
        raise OSError(errno.EIO, "share went away")

    monkeypatch.setattr(witness_dir.os, "link", link_fails)
    with pytest.raises(WitnessError):
        w.cas_sync(Token(0), WitnessState().successor(holder="node1"))
    monkeypatch.undo()
    assert w.read_sync() == (None, Token(0))
    assert not [n for n in os.listdir(tmp_path) if n.startswith("tmp.")], "the temp file is cleaned up"


def test_torn_temp_files_are_ignored(tmp_path):
    w = DirectoryWitness(tmp_path)
    s1 = WitnessState().successor(epoch=1, holder="node1")
    assert w.cas_sync(Token(0), s1)
    (tmp_path / "tmp.deadbeef").write_bytes(b'{"epoch": 9, "hol')  # a writer that crashed mid-write
    (tmp_path / "state.x").write_text("not a state number")
    assert w.read_sync() == (s1, Token(1))
    s2 = s1.successor()
    assert w.cas_sync(Token(1), s2) == Token(2)
    assert w.read_sync() == (s2, Token(2))


def test_a_damaged_newest_state_is_an_error_not_a_fallback(tmp_path):
    w = DirectoryWitness(tmp_path)
    assert w.cas_sync(Token(0), WitnessState().successor(holder="node1"))
    (tmp_path / "state.2").write_bytes(b"\x00\x00garbage")
    with pytest.raises(WitnessError, match="not valid"):
        w.read_sync()


def test_file_and_directory_are_fsynced_before_the_win_is_reported(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(witness_dir.os, "fsync", lambda fd: (calls.append("file"), real_fsync(fd))[1])
    monkeypatch.setattr(witness_dir, "fsync_dir", lambda p: calls.append(f"dir {os.path.basename(p)}"))
    real_link = os.link
    monkeypatch.setattr(witness_dir.os, "link", lambda a, b: (calls.append("link"), real_link(a, b))[1])
    w = DirectoryWitness(tmp_path)
    assert w.cas_sync(Token(0), WitnessState().successor(holder="node1"))
    assert calls[:3] == ["file", "link", f"dir {tmp_path.name}"], calls


def test_old_states_are_pruned_and_a_stale_token_cannot_remake_one(tmp_path):
    w = DirectoryWitness(tmp_path, keep=3)
    state, token = w.read_sync()
    state = state or WitnessState()
    for _ in range(10):
        state = state.successor(holder="node1")
        token = w.cas_sync(token, state)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("state."))
    assert names == ["state.10", "state.8", "state.9"]
    assert all((tmp_path / n).stat().st_mode & 0o077 == 0 for n in names)  # private files (issue 17)
    # a writer still holding token 2 (its state.3 was pruned, could be made again): it must lose
    assert w.cas_sync(Token(2), state.successor(holder="node2")) is None
    assert w.read_sync() == (state, Token(10))
    # even if the old number is gone and it races past the existence check, a higher state wins
    (tmp_path / "state.3").unlink(missing_ok=True)
    assert w.cas_sync(Token(1), WitnessState().successor(holder="node2")) is None  # state.1 pruned
    w2 = DirectoryWitness(tmp_path, keep=3)
    assert w2.read_sync() == (state, Token(10))


def test_async_calls_run_off_the_event_loop_with_a_timeout(tmp_path, monkeypatch):
    w = DirectoryWitness(tmp_path, timeout=0.3)

    def slow_read():
        time.sleep(2)
        return None, Token(0)

    monkeypatch.setattr(w, "read_sync", slow_read)

    async def go():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        with pytest.raises(WitnessError, match="timed out"):
            await w.read()
        t.cancel()
        await w.close()
        return ticks

    assert asyncio.run(go()) > 10  # the loop kept running while the share hung
