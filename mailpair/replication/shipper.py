"""The active side's replication server: it listens for the passive, authenticates it, and hands
each request to what serves it; it also watches the log that absent copies hold.

Per connection the passive asks for one thing: the list of databases, a seed of one database
(copystream.serve_seed), or the records of one database from an LSN (copystream.CopyStream).
What the active knows about each copy is in copies.py; the decisions (copy status, when a pin is
let go of, how big a batch is) are pure functions in policy.py.

Rules this module keeps:
- A copy's stream or seed is counted (CopyView.opening) before its first await, so the held-log
  check never lets go of a copy whose stream or seed is about to pin what it needs.
- Before the handshake succeeds a connection is held briefly and cheaply (issue 17): its frames
  are at most codec.HANDSHAKE_MAX_FRAME bytes, the whole handshake has HANDSHAKE_DEADLINE_S, and
  at most MAX_UNAUTHENTICATED connections are in it at once; beyond that, new connections are
  closed at once. A passive that has authenticated is not counted, so its stream goes on.
- The held-log check runs in its own task, apart from the synchronous-mode fallback tick, so a
  slow pin file never holds up the fallback; its final decision is taken on the writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from mailpair.replication import codec, policy, tls
from mailpair.replication.codec import Channel, Role
from mailpair.replication.copies import CopyView, HeadTracker
from mailpair.replication.copystream import REQUEST_TIMEOUT, WRITE_TIMEOUT, CopyStream, serve_seed
from mailpair.replication.link import Link
from mailpair.replication.settings import ReplicationSettings
from mailpair.replication.syncgate import SyncGate
from mailpair.store import Database, NodeStore
from mailpair.store.log import Record

log = logging.getLogger("mailpair.replication")

HANDSHAKE_DEADLINE_S = 5.0  # from accept to the passive's proof; a real passive needs milliseconds
MAX_UNAUTHENTICATED = 8  # connections in their handshake at once; the pair has one passive
HELD_LOG_CHECK_S = 2.0  # how often the log held for absent copies is looked at


class Shipper:
    def __init__(self, store: NodeStore, settings: ReplicationSettings):
        self.store = store
        self.settings = settings
        self.port = 0
        self.copies: dict[tuple[str, str], CopyView] = {}
        self.heads: dict[str, HeadTracker] = {}
        self.gates: dict[str, SyncGate] = {}
        self.refused: list[dict[str, Any]] = []
        self.unauthenticated = 0  # connections in their handshake now
        self.turned_away = 0  # connections closed at once because MAX_UNAUTHENTICATED were
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None  # the server side of replication TLS; None: plain, as configured
        self._tasks: set[asyncio.Task] = set()
        self._pin_tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._held_watch: asyncio.Task | None = None
        self._started = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for db in self.store.databases.values():
            self._track(db)
            for stale in Path(db.path).glob(".snapshot-*"):
                stale.unlink(missing_ok=True)
        # TLS starts in _handle, not in the server, so the TLS handshake counts among the
        # unauthenticated connections, has their deadline, and a refused peer is logged.
        self._tls = tls.server_context_for(self.settings)  # no certificate, no start
        self._server = await asyncio.start_server(self._handle, self.settings.host, self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())
        self._held_watch = asyncio.create_task(self._watch_held_log())
        log.info(
            "replication shipper listening on %s:%d (%s mode, %s)",
            self.settings.host,
            self.port,
            self.settings.mode,
            "mutual TLS" if self.settings.transport == "tls" else "PLAIN: not encrypted, as configured",
        )

    def _track(self, db: Database) -> None:
        if db.name in self.heads:
            return
        head = HeadTracker()
        self.heads[db.name] = head

        def on_durable(records: list[Record], raws: list[bytes]) -> None:
            head.add(records[-1].lsn, sum(len(r) for r in raws))

        db.log_listeners.append(on_durable)
        if self.settings.mode == "sync":
            gate = SyncGate(db.name, self.settings.sync_fallback_s, self.settings.healthy_queue)
            self.gates[db.name] = gate
            db.ack_waiter = gate.waiter

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            for db in list(self.store.databases.values()):
                self._track(db)  # databases created while running
            for gate in self.gates.values():
                gate.check()

    async def _watch_held_log(self) -> None:
        """Apart from _tick, so a slow pin file never holds up the synchronous-mode fallback."""
        while True:
            await asyncio.sleep(HELD_LOG_CHECK_S)
            for db in list(self.store.databases.values()):
                try:
                    await self._release_held_log(db)
                except Exception:
                    log.exception("replication: checking the log held for copies of %s failed", db.name)

    async def _release_held_log(self, db: Database) -> None:
        """Let go of the pin of a copy that has been away a while and alone keeps more log than
        allowed, or whose log is gone already (a pin below the log's start only stops truncation)."""
        limit = self.settings.max_held_log_bytes
        for name, lsn in (await asyncio.to_thread(db.pins)).items():
            if not name.startswith("copy:"):
                continue
            node = name.removeprefix("copy:")
            view = self.copies.get((db.name, node))
            stale = lsn < db.log.first_lsn
            away = time.monotonic() - (view.away_since if view is not None else self._started)
            if not policy.pin_may_be_released(
                present=self._present(db.name, node), stale=stale, away_s=away, grace_s=self.settings.held_log_grace_s
            ):
                continue

            def release(name: str = name, node: str = node, lsn: int = lsn, stale: bool = stale) -> int | None:
                # on the writer thread, so no pin or truncation can come in between; presence is
                # looked at again, as a stream may have begun (and made its view) since
                pins = db.pins()
                others = min((v for k, v in pins.items() if k != name), default=lsn)
                held = db.log.bytes_from(lsn) - db.log.bytes_from(others)  # what this pin alone keeps
                if not policy.release_pin(
                    present=self._present(db.name, node),
                    stale=stale,
                    checkpointed="checkpoint" in pins,
                    held_bytes=held,
                    limit=limit,
                ):
                    return None
                # The segments first, then the pin file: on a full disk the pin file cannot be
                # rewritten until the segments are gone. A crash in between leaves a pin below the
                # log's start, which the next check lets go of.
                db.log.truncate_before(others)
                db.set_pin(name, None)
                return held

            held = await asyncio.to_thread(db.call_on_writer, release)
            if held is None:
                continue
            if view is not None:
                view._pinned = -1
                view.reason = f"away too long: the active let go of its log from LSN {lsn} ({held >> 20} MiB held)"
            log.error(
                "database %s: the copy on %s has been away while %d MiB of log piled up for it (limit %d MiB); "
                "the active no longer keeps log for it, so its disk cannot fill; the copy reseeds by itself if "
                "what it needs is gone when it returns",
                db.name,
                node,
                held >> 20,
                limit >> 20,
            )

    def _present(self, db_name: str, node: str) -> bool:
        view = self.copies.get((db_name, node))
        return view is not None and bool(view.streams or view.opening)

    async def close(self) -> None:
        for task in (self._ticker, self._held_watch):
            if task is not None:
                task.cancel()
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        # Pins in flight run on the writer thread: let them finish (never cancel them) so none is
        # queued after the store has stopped its writer.
        await asyncio.gather(*self._pin_tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
        for name, gate in self.gates.items():
            db = self.store.databases.get(name)
            if db is not None and db.ack_waiter == gate.waiter:
                db.ack_waiter = None
            gate.release_all()

    # ------------------------------------------------------------------ status
    def status(self) -> list[dict[str, Any]]:
        out = []
        for (name, node), view in sorted(self.copies.items()):
            db = self.store.databases.get(name)
            head = db.log.last_lsn if db else 0
            p = view.passive
            stored = p.get("stored_lsn", view.acked)
            queue = max(0, head - stored)
            tracker = self.heads.get(name)
            status = policy.active_view_status(view.streams, p.get("status"))
            written = tracker.written_at(stored + 1) if tracker and queue else None
            out.append(
                {
                    "database": name,
                    "node": node,
                    "status": status,
                    "reason": p.get("reason") if view.streams else view.reason,
                    "copy_queue": queue,
                    "copy_queue_bytes": tracker.bytes_after(stored, queue) if tracker else 0,
                    "replay_queue": p.get("replay_queue"),
                    "replay_queue_bytes": p.get("replay_queue_bytes"),
                    "stored_lsn": stored,
                    "replayed_lsn": p.get("replayed_lsn"),
                    "last_stored_time": p.get("last_stored_time"),
                    "last_replayed_time": p.get("last_replayed_time"),
                    "copy_lag_s": 0.0 if not queue else (round(time.monotonic() - written, 3) if written else None),
                    "seed_progress": p.get("seed_progress"),
                    "mode": view.mode,
                    "sync_fallback": self.gates[name].fallback if name in self.gates else None,
                }
            )
        return out

    def lag_samples_ms(self, database: str) -> list[float]:
        return [s for (name, _), v in self.copies.items() if name == database for s in v.lag_samples]

    # ------------------------------------------------------------------ connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self.unauthenticated >= MAX_UNAUTHENTICATED:
            self.turned_away += 1
            if self.turned_away % 100 == 1:  # loud, but not once per connection of a flood
                log.warning(
                    "replication: %d connections are authenticating already; closed the one from %s at once "
                    "(%d turned away so far)",
                    self.unauthenticated,
                    where,
                    self.turned_away,
                )
            writer.transport.abort()  # no goodbye: nothing is read or written for it
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        link = Link(reader, writer, Channel(Role.ACTIVE, self.settings.secret, self.settings.node))
        try:
            self.unauthenticated += 1
            try:
                if self._tls is not None:
                    try:
                        await writer.start_tls(self._tls, ssl_handshake_timeout=HANDSHAKE_DEADLINE_S)
                    except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as e:
                        # Mostly a peer whose certificate the pair's authority did not sign.
                        raise codec.AuthFailed(f"TLS: {e}") from e
                node = await link.handshake(HANDSHAKE_DEADLINE_S)
            except codec.AuthFailed as e:
                log.warning("replication: refused connection from %s: %s", where, e)
                self.refused.append({"time": time.time(), "peer": where, "reason": str(e)})
                del self.refused[:-50]
                return
            finally:
                self.unauthenticated -= 1
            await self._serve(node, await link.receive(REQUEST_TIMEOUT), link)
        except (codec.ProtocolError, codec.PeerError) as e:
            log.warning("replication: connection from %s dropped: %s", where, e)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError) as e:
            log.info("replication: connection from %s ended: %s", where, type(e).__name__)
        except asyncio.CancelledError:
            pass  # the shipper is closing; asyncio's server would report a cancelled handler as an error
        finally:
            self._tasks.discard(task)
            link.close()
            await link.wait_closed()

    async def _serve(self, node: str, msg: dict[str, Any], link: Link) -> None:
        """Dispatch one request of an authenticated passive."""
        kind = msg["t"]
        if kind == "list":
            dbs = [
                {"name": db.name, "id": db.db_id, "head": db.log.last_lsn, "epoch": db.epoch}
                for db in self.store.databases.values()
            ]
            await link.send({"t": "dbs", "dbs": dbs}, WRITE_TIMEOUT)
            return
        if kind not in ("seed", "open"):
            raise codec.ProtocolError(f"unknown request {kind}")
        name = msg.get("db")
        db = self.store.databases.get(name) if isinstance(name, str) else None
        if db is None:
            await link.send(codec.error("unknown_db", f"the active has no database {name!r}"))
            return
        # Counted before its first await, so the held-log check never lets go of a copy whose
        # stream or seed is about to pin what it needs.
        view = self._view(db.name, node)
        view.opening += 1
        try:
            if kind == "seed":
                await serve_seed(db, view, node, link, self.settings)
                return
            self._track(db)
            stream = CopyStream(db, view, link, self.settings, self.heads[db.name], self.gates.get(db.name), self._pin_tasks)
            if not await stream.refuse(msg):
                await stream.run(msg["from"])
        finally:
            view.opening -= 1
            if not view.opening:
                view.away_since = time.monotonic()

    def _view(self, db_name: str, node: str) -> CopyView:
        view = self.copies.get((db_name, node))
        if view is None:
            view = self.copies[(db_name, node)] = CopyView(db_name, node)
        return view
