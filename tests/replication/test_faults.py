"""Faults between and on two real node processes: SIGKILL of the passive mid-stream, a proxy that
flips bits, cuts and stalls the stream, a damaged segment on the active's disk, a wrong secret."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid

from mailpair.replication import codec, link
from mailpair.replication.tls import client_context


def _passive_tls(pair):
    """The passive's TLS context (its pair-made certificate), for a test that speaks as it."""
    return client_context(*pair.config("node2").replication_tls_files())


def test_passive_killed_mid_stream_resumes_from_its_lsn(pair):
    pair.start_active()
    pair.start_passive()
    pair.deliver_start(5000, conc=32)
    pair.wait(lambda: pair.copy()["stored_lsn"] > 1500, 60, "copy to store 1500 records")
    pair.kill_passive()
    killed_at = max(int(line.split("LSN ")[-1]) for line in pair.log_text("node2").splitlines() if "streaming from" in line)
    time.sleep(0.5)
    pair.start_passive()
    pair.deliver_result()
    last = pair.deliver(10)["lsn"]
    pair.wait_caught_up(last, 120)
    lines = [line for line in pair.log_text("node2").splitlines() if "streaming from" in line]
    resumed_at = int(lines[-1].split("LSN ")[-1])
    assert resumed_at > max(killed_at, 1500), lines  # it went on from what it had stored, no reseed
    assert pair.log_text("node2").count("seeded from a snapshot") == 1  # only the first seed of pair up
    pair.stop()
    a, p = pair.digests()
    assert a == p and a["mail"]["applied_lsn"] == last


def test_fault_proxy_flips_cuts_and_stalls_yet_copy_stays_identical(pair, fault_proxy):
    pair.tune("node2", stall_timeout_s=2.5, reconnect_max_s=0.5)
    # Over TLS (the default) a flipped bit is caught by TLS itself (a bad record MAC) before the
    # codec sees it; this test is about the codec's checks and inspection, so the channel is plain.
    for name in ("node1", "node2"):
        cfg = pair.config(name)
        cfg.replication_transport = "plain"
        cfg.save(pair.config_path(name))
    proxy = fault_proxy(pair.config("node1").replication.port)
    try:
        pair.set_passive_peer_port(proxy.port)
        pair.start_active()
        pair.start_passive()
        pair.wait(lambda: pair.copy()["status"] == "Healthy", 30, "copy Healthy through the proxy")
        pair.deliver_start(4000, conc=16, size=3000)
        proxy.flip_every = 8
        time.sleep(3)
        proxy.flip_every = 0
        for _ in range(3):
            proxy.cut()
            time.sleep(0.7)
        proxy.stall(4)  # longer than the passive's stall timeout
        pair.wait(lambda: "stalled" in (pair.copy()["reason"] or ""), 15, "stall to be reported")
        proxy.flip_every = 20
        time.sleep(2)
        proxy.flip_every = 0
        pair.deliver_result()
        last = pair.deliver(10)["lsn"]
        c = pair.wait_caught_up(last, 120)
        assert proxy.flips > 0 and proxy.cuts == 3
        assert c["reconnects"] >= 4
        log = pair.log_text("node2")
        assert "failed inspection" in log or "bad data from the active" in log  # damage seen, not stored
    finally:
        pair.stop()
        proxy.close()
    a, p = pair.digests()
    assert a == p and a["mail"]["applied_lsn"] == last


def test_corrupt_segment_on_the_active_fails_the_copy_with_the_lsn(pair, flip_record):
    pair.start_active()
    pair.start_passive()
    first = pair.deliver(200)["lsn"]
    pair.wait_caught_up(first)
    pair.copy_action("suspend")
    pair.wait(lambda: pair.copy()["status"] == "Suspended", 10, "Suspended")
    last = pair.deliver(300)["lsn"]
    bad = flip_record(pair.data("node1") / "databases" / "mail" / "log", range(first + 100, last))
    pair.copy_action("resume")
    c = pair.wait(lambda: pair.copy() if pair.copy()["status"] == "Failed" else None, 30, "copy Failed")
    assert f"LSN {bad}" in c["reason"]
    assert c["stored_lsn"] == bad - 1  # everything before the damage, nothing from it on
    assert c["replayed_lsn"] <= bad - 1
    # the active keeps serving
    assert pair.deliver(5)["lsn"] == last + 5
    assert pair.copy()["status"] == "Failed"


def test_wrong_secret_is_refused_and_logged(pair):
    pair.start_active()
    pair.set_secret("node2", "not-the-cluster-secret")
    pair.start_passive()
    c = pair.wait(lambda: pair.copy() if "authentication" in (pair.copy()["reason"] or "") else None, 20, "auth refusal")
    assert c["status"] == "Disconnected"
    before = c["stored_lsn"]
    pair.deliver(5)
    time.sleep(1.5)
    assert pair.copy()["stored_lsn"] == before  # nothing shipped to a node without the secret
    assert "refused connection" in pair.log_text("node1") and "wrong cluster secret" in pair.log_text("node1")


def test_garbage_on_the_replication_port_changes_nothing(pair):
    pair.start_active()
    pair.start_passive()
    port = pair.config("node1").replication.port
    for junk in (b"GET / HTTP/1.0\r\n\r\n", struct.pack("<II", 2**31, 0) + b"x" * 64, b"\x00" * 4096):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(4096):
                pass  # the active hangs up on it
    last = pair.deliver(20)["lsn"]
    pair.wait_caught_up(last)


def test_an_interrupted_reseed_leaves_the_old_copy_in_place(pair, fault_proxy):
    proxy = fault_proxy(pair.config("node1").replication.port)
    try:
        pair.set_passive_peer_port(proxy.port)
        pair.start_active()
        pair.start_passive()
        last = pair.deliver(200)["lsn"]
        pair.wait_caught_up(last)
        db_dir = pair.data("node2") / "databases" / "mail"
        old_id = (db_dir / "id").read_text()
        proxy.stall(30)  # the snapshot never arrives
        pair.copy_action("reseed")
        c = pair.wait(lambda: pair.copy() if pair.copy()["status"] == "Seeding" else None, 10, "Seeding")
        assert c["seed_progress"] == 0.0
        pair.kill_passive()  # mid-seed
        assert (db_dir / "id").read_text() == old_id and (db_dir / "state.sqlite").exists()
        # what a seed killed halfway through its transfer leaves: a staging directory beside the copy
        stage = pair.data("node2") / "replication" / "seed-mail"
        stage.mkdir(parents=True, exist_ok=True)
        (stage / "state.sqlite").write_bytes(b"SQLite format 3\0" + b"\0" * 4000)
        proxy.stall(0)
        pair.start_passive()
        last = pair.deliver(10)["lsn"]
        pair.wait_caught_up(last)  # it went on from the old copy
        assert not stage.exists()  # the partial seed was dropped, never installed
        assert pair.log_text("node2").count("seeded from a snapshot") == 1
    finally:
        pair.stop()
        proxy.close()
    a, p = pair.digests()
    assert a == p


def test_the_active_refuses_a_copy_from_a_newer_epoch_and_authenticated_garbage(pair):
    """A copy claiming a newer epoch than the active's means this active is stale (DESIGN rule
    3): it is refused with the reason, and the active goes on serving."""
    pair.start_active()
    cfg = pair.config("node1")
    db_id = uuid.UUID((pair.data("node1") / "databases" / "mail" / "id").read_text().strip()).bytes

    async def ask(msg):
        conn = await link.connect("127.0.0.1", cfg.replication.port, cfg.secret.encode(), "node2", 5, 5, _passive_tls(pair))
        try:
            await conn.send(msg)
            return await conn.receive(5)
        except (codec.PeerError, asyncio.IncompleteReadError) as e:
            return e
        finally:
            conn.close()

    err = asyncio.run(ask({"t": "open", "db": "mail", "id": db_id, "from": 1, "epoch": 99}))
    assert isinstance(err, codec.PeerError) and err.code == "epoch" and "newer than the active's epoch 1" in str(err)
    err = asyncio.run(ask({"t": "open", "db": "mail", "id": uuid.uuid4().bytes, "from": 1, "epoch": 1}))
    assert isinstance(err, codec.PeerError) and err.code == "db_id"
    err = asyncio.run(ask({"t": "no-such-request"}))
    assert isinstance(err, asyncio.IncompleteReadError)  # hung up on
    assert pair.deliver(5)["ok"]


def test_a_passive_that_acknowledges_records_it_was_never_sent_is_dropped(make_pair):
    """A lying (or broken) passive must not release synchronous callers: they wait for a real
    acknowledgement, or for the fallback once the liar is gone."""
    pair = make_pair(mode="sync")
    pair.tune("node1", sync_fallback_s=3.0)
    cfg = pair.config("node1")
    secret = cfg.secret.encode()

    async def liar() -> tuple[float, float, BaseException]:
        async def connect():
            return await link.connect("127.0.0.1", cfg.replication.port, secret, "node2", 5, 5, _passive_tls(pair))

        conn = await connect()
        await conn.send({"t": "list"})
        db = next(d for d in (await conn.receive(5))["dbs"] if d["name"] == "mail")
        conn.close()
        conn = await connect()
        await conn.send({"t": "open", "db": "mail", "id": db["id"], "from": db["head"] + 1, "epoch": db["epoch"]})
        assert (await conn.receive(5))["t"] == "ok"
        await asyncio.to_thread(pair.deliver_start, 1, 1)
        while (msg := await conn.receive(10))["t"] != "recs":
            pass
        lied_at = time.monotonic()
        await conn.send({"t": "ack", "lsn": msg["first"] + 1000, "info": {}})
        try:
            while True:
                await conn.receive(10)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            return lied_at, time.monotonic(), e
        finally:
            conn.close()

    try:
        pair.start_active()
        lied_at, dropped_at, _ = asyncio.run(liar())
        assert dropped_at - lied_at < 5
        out = pair.deliver_result()  # answered by the fallback, not by the lie
        answered_at = time.monotonic()
        assert out["errors"] == 0 and answered_at - lied_at > 2.0
        log = pair.log_text("node1")
        assert "only up to" in log and "FELL BACK TO ASYNCHRONOUS" in log
    finally:
        pair.stop()
