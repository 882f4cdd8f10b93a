"""The active node of a test pair, run as a real node process with a load driver on the side.

`python -m tests.replication.driver --config DATA/node.json` runs mailpair's own Node (store,
listeners, shipper, admin API) exactly as `mailpair node run` does, and also reads JSON commands
on stdin so a test can deliver many messages through the store without waiting for a delivery
protocol. Each command gets one JSON line on stdout.

    {"cmd": "deliver", "n": 1000, "conc": 32, "size": 2000}  -> {"ok": true, "lsn": ..., "per_s": ...}
    {"cmd": "flags", "n": 100}                               -> flag changes on delivered messages
    {"cmd": "shipper"}                                       -> the shipper's copy status
    {"cmd": "checkpoint"}                                    -> checkpoint; the log's first LSN, pins
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from mailpair.config import NodeConfig
from mailpair.datadir import lock_data_dir
from mailpair.logs import setup_logging
from mailpair.node import Node
from mailpair.store import prepare_message


def message(i: int, user: str, size: int) -> bytes:
    body = (f"line {i} " * (size // 8 + 1))[:size]
    return (
        f"From: load@example.test\r\nTo: {user}@example.test\r\nSubject: load {i}\r\n"
        f"Message-ID: <load{i}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


async def deliver(node: Node, n: int, conc: int, size: int, start: int) -> dict:
    db = node.store.default_database()
    users = await db.read(lambda c: [r[0] for r in c.execute("SELECT name FROM accounts ORDER BY name")])
    counter = iter(range(start, start + n))
    t0 = time.perf_counter()
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            user = users[i % len(users)]
            try:
                await db.acommit(
                    "deliver", recipients=[(user, None)], date=time.time_ns() // 1000, **prepare_message(message(i, user, size))
                )
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - t0
    return {"ok": errors == 0, "errors": errors, "lsn": db.log.last_lsn, "per_s": round(n / elapsed, 1), "elapsed": elapsed}


async def flags(node: Node, n: int) -> dict:
    db = node.store.default_database()
    rows = await db.read(
        lambda c: c.execute(
            "SELECT b.account, b.name, m.uid FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id ORDER BY m.modseq LIMIT ?",
            (n,),
        ).fetchall()
    )
    for account, box, uid in rows:
        await db.acommit("store_flags", account=account, mailbox=box, uids=[uid], flags=["\\Seen"], mode="add")
    return {"ok": True, "lsn": db.log.last_lsn}


async def main(config_path: Path) -> None:
    config = NodeConfig.load(config_path)
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    await node.start()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "ports": node.ports()}), flush=True)
    next_msg = 0

    async def commands() -> None:
        nonlocal next_msg
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "deliver":
                    out = await deliver(node, cmd["n"], cmd.get("conc", 16), cmd.get("size", 1500), next_msg)
                    next_msg += cmd["n"]
                elif cmd["cmd"] == "flags":
                    out = await flags(node, cmd["n"])
                elif cmd["cmd"] == "checkpoint":  # make the state durable and drop log no pin needs
                    db = node.store.default_database()
                    await asyncio.to_thread(db.checkpoint)
                    out = {"ok": True, "first_lsn": db.log.first_lsn, "pins": db.pins()}
                elif cmd["cmd"] == "shipper":
                    out = {"ok": True, "copies": node.shipper.status() if node.shipper else []}
                else:
                    out = {"ok": False, "error": f"unknown command {cmd['cmd']}"}
            except Exception as e:
                out = {"ok": False, "error": repr(e)}
            print(json.dumps(out, default=str), flush=True)

    task = asyncio.create_task(commands())
    try:
        await node.run_until_stopped()
    finally:
        task.cancel()
        await node.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    args = ap.parse_args()
    cfg = NodeConfig.load(args.config)
    setup_logging(cfg.name, cfg.log_json)
    lock_data_dir(Path(cfg.data))
    asyncio.run(main(args.config.resolve()))
