"""The node process: one store, the protocol listeners, replication and the admin API on one loop.

`mailpair node run --config DATA/node.json` runs it. It holds an exclusive lock on its data
directory, so no second process (a CLI command, a second node) can write the same databases. On
start it writes DATA/node.state.json with its pid and the ports it bound; on SIGTERM it stops the
listeners (clients get 421 / BYE), waits for in-flight commits and closes the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from mailpair.api.server import start_admin
from mailpair.backup.schedule import Scheduler
from mailpair.config import NodeConfig
from mailpair.datadir import clear_state, lock_data_dir, write_state
from mailpair.filemodes import private_umask, tighten
from mailpair.logs import setup_logging
from mailpair.memory import return_large_buffers
from mailpair.protocols import available_listeners
from mailpair.replication import ReplicationSettings, start_receiver, start_shipper
from mailpair.store import DatabaseConfig, NodeStore, Preparer
from mailpair.store.prepare import default_workers

logger = logging.getLogger("mailpair.node")


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.data = Path(config.data)
        self.started_at = time.time()
        self.role = config.role
        self.servers: dict[str, Any] = {}
        self.shipper = None
        self.receiver = None
        self.events: list[dict[str, Any]] = []
        self.store: NodeStore | None = None
        self._stopping = asyncio.Event()

    def event(self, kind: str, message: str, **fields: Any) -> None:
        entry = {"time": time.time(), "kind": kind, "message": message, **fields}
        self.events.append(entry)
        del self.events[:-200]
        logger.info("%s: %s", kind, message)

    def db_config(self) -> DatabaseConfig:
        return DatabaseConfig(segment_size=self.config.segment_size)

    async def start(self) -> None:
        writable = self.role == "active"
        if writable:
            self.store = await asyncio.to_thread(lambda: NodeStore(self.data, self.db_config()).open(create_default=True))
        else:
            # a damaged copy must not keep the passive down: it shows Failed until reseeded
            self.store = await asyncio.to_thread(
                lambda: NodeStore(self.data, self.db_config(), writable=False).open(create_default=False, keep_going=True)
            )
        if writable:
            workers = self.config.analysis_workers
            self.store.preparer = await Preparer(default_workers() if workers is None else workers).start()
            await self._start_protocols()
            await self._start_shipper()
        else:
            await self._start_receiver()
        self.servers["admin"] = await start_admin(self, self.config.admin.host, self.config.admin.port)
        self.servers["backups"] = Scheduler.for_node(self).start()  # idle until DATA/backups.json names a target
        self.write_state()
        self.event("start", f"node {self.config.name} started as {self.role}")

    async def _start_protocols(self) -> None:
        for name, starter, settings in await asyncio.to_thread(available_listeners, self.config):
            self.servers[name] = await starter(self.store, settings)

    async def _start_shipper(self) -> None:
        if self.config.peer_replication is None or not (Path(self.config.data).parent / self.config.peer_name).exists():
            return
        self.shipper = await start_shipper(self.store, self.replication_settings())
        self.servers["replication"] = self.shipper

    async def _start_receiver(self) -> None:
        self.receiver = await start_receiver(self.store, self.replication_settings())

    def replication_settings(self) -> ReplicationSettings:
        c = self.config
        peer = c.peer_replication
        cert, key, ca = c.replication_tls_files()
        return ReplicationSettings(
            transport=c.replication_transport,
            tls_cert=cert,
            tls_key=key,
            tls_ca=ca,
            secret=c.secret.encode(),
            host=c.replication.host,
            port=c.replication.port,
            peer_host=peer.host if peer else None,
            peer_port=peer.port if peer else None,
            mode=c.mode,
            node=c.name,
        )

    def ports(self) -> dict[str, int | None]:
        return {name: getattr(server, "port", None) for name, server in self.servers.items()}

    def write_state(self) -> None:
        state = {"name": self.config.name, "pid": os.getpid(), "role": self.role, "ports": self.ports()}
        write_state(self.data, state)

    async def stop(self) -> None:
        self.event("stop", f"node {self.config.name} stopping")
        for name in ["backups", "imap", "imaps", "lmtp", "smtp", "admin", "replication"]:
            server = self.servers.pop(name, None)
            if server is not None:
                try:
                    await server.close()
                except Exception:
                    logger.exception("closing %s failed", name)
        if self.receiver is not None:
            await self.receiver.close()
        if self.store is not None:
            await self.store.preparer.close()
            await asyncio.to_thread(self.store.close)
        clear_state(self.data)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()

    # ------------------------------------------------------------------ views for the admin API
    def status(self) -> dict[str, Any]:
        """This node's view: its role, epoch, and for each database the copies it knows of."""
        dbs = []
        receiver_status = {s["database"]: s for s in self.receiver.status()} if self.receiver else {}
        shipper_status = {s["database"]: s for s in self.shipper.status()} if self.shipper else {}
        names = sorted(set(self.store.databases) | set(receiver_status))
        for name in names:
            db = self.store.databases.get(name)
            copies = []
            if self.role == "active" and db is not None:
                copies.append(
                    {
                        "node": self.config.name,
                        "status": "Mounted",
                        "copy_queue": 0,
                        "replay_queue": 0,
                        "stored_lsn": db.log.last_lsn,
                        "replayed_lsn": db.applied_lsn,
                    }
                )
                if name in shipper_status:
                    copies.append(shipper_status[name])
            elif name in receiver_status:
                copies.append(receiver_status[name])
            dbs.append(
                {
                    "name": name,
                    "applied_lsn": db.applied_lsn if db else 0,
                    "last_lsn": db.log.last_lsn if db else 0,
                    "copies": copies,
                    "last_backup": db.last_backup() if db else None,
                }
            )
        epoch = max((db.epoch for db in self.store.databases.values()), default=1)
        witness = None
        if self.config.witness:
            try:
                witness = {"path": self.config.witness, **json.loads((Path(self.config.witness) / "epoch.json").read_text())}
            except (OSError, ValueError) as e:
                witness = {"path": self.config.witness, "error": str(e)}
        return {
            "witness": witness,
            "name": self.config.name,
            "role": self.role,
            "epoch": epoch,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "ports": self.ports(),
            "databases": dbs,
        }


async def run_node(config: NodeConfig) -> None:
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    await node.start()
    try:
        await node.run_until_stopped()
    finally:
        await node.stop()


def main(config_path: Path) -> None:
    config = NodeConfig.load(config_path)
    setup_logging(config.name, config.log_json)
    return_large_buffers()
    private_umask()
    tighten(Path(config.data))
    lock_fd = lock_data_dir(Path(config.data))
    try:
        asyncio.run(run_node(config))
    finally:
        os.close(lock_fd)
