"""The active side: authenticate the passive, seed it, and stream log records to it.

Per connection the passive asks for one thing: the list of databases, a seed of one database,
or the records of one database from an LSN. Streaming starts in file mode (records read back from
segment files, checked as they are read) and switches to block mode (records handed over by the
store's log listener as they are written) once it reaches the head. A live buffer that overflows
(the passive is slower than the writer) sends the stream back to file mode.

If the active's own log is damaged where the passive needs it, the passive is told, with the LSN
(it marks its copy Failed); the active itself keeps serving.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from mailpair.replication import ReplicationSettings, codec, seed
from mailpair.replication.codec import Channel, Role
from mailpair.replication.link import Link
from mailpair.replication.syncgate import SyncGate
from mailpair.store import Database, NodeStore
from mailpair.store.log import LogCorruption, LogError, Record

log = logging.getLogger("mailpair.replication")

HANDSHAKE_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
HELD_LOG_CHECK_S = 2.0  # how often the log held for absent copies is looked at


class HeadTracker:
    """Per database: when each recent batch was written and the log's running byte count, so the
    copy queue can be told in bytes and copy lag in time. Written by the store's writer thread,
    read on the event loop, hence the lock."""

    def __init__(self, keep: int = 100_000):
        self.keep = keep
        self._lock = threading.Lock()
        self._lsns: list[int] = []  # last LSN of each batch
        self._times: list[float] = []  # monotonic time it was durable
        self._bytes: list[int] = []  # running byte count after it
        self.total_bytes = 0

    def add(self, last_lsn: int, nbytes: int) -> None:
        with self._lock:
            self.total_bytes += nbytes
            self._lsns.append(last_lsn)
            self._times.append(time.monotonic())
            self._bytes.append(self.total_bytes)
            if len(self._lsns) > 2 * self.keep:
                del self._lsns[: self.keep], self._times[: self.keep], self._bytes[: self.keep]

    def bytes_after(self, lsn: int, records_behind: int) -> int:
        """Bytes written after lsn (an estimate when lsn is older than what is remembered)."""
        if records_behind <= 0:
            return 0
        with self._lock:
            if not self._lsns:
                return 0
            i = bisect.bisect_right(self._lsns, lsn) - 1
            if i < 0:
                span = self._lsns[-1] - self._lsns[0] + 1
                return int(records_behind * (self._bytes[-1] - self._bytes[0]) / max(1, span))
            return self.total_bytes - self._bytes[i]

    def written_at(self, lsn: int) -> float | None:
        """Monotonic time the batch holding lsn was durable on the active."""
        with self._lock:
            i = bisect.bisect_left(self._lsns, lsn)
            return self._times[i] if i < len(self._lsns) else None


class CopyView:
    """What the active knows about one passive copy of one database."""

    @property
    def connected(self) -> bool:
        return self.streams > 0

    def __init__(self, database: str, node: str):
        self.database = database
        self.node = node
        self.streams = 0  # open streams of this copy (a reconnect may overlap the old one's end)
        self.opening = 0  # its streams and seeds being served, counted from their first step
        self.away_since = time.monotonic()  # when it last had none
        self.mode = "file"
        self.acked = 0
        self.passive: dict[str, Any] = {}
        self.reason: str | None = "not connected yet"
        self.lag_samples: collections.deque[float] = collections.deque(maxlen=100_000)  # ms
        self._pinned = -1
        self._pinned_at = 0.0
        self.pin_task: asyncio.Task | None = None


class Sent:
    """The last LSN sent on one stream: that stream's acknowledgements may not go past it. Kept
    per stream, not per copy, since a reconnect's stream may overlap the end of the old one."""

    __slots__ = ("lsn",)

    def __init__(self, lsn: int):
        self.lsn = lsn


class LiveFeed:
    """Records as the writer makes them durable, handed to one stream on its event loop."""

    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop, max_records: int):
        self.db = db
        self.loop = loop
        self.max_records = max_records
        self.items: collections.deque[tuple[int, bytes]] = collections.deque()
        self.bytes = 0  # held in items
        self.dropped_upto = 0  # the last LSN dropped by an overflow: from files only
        self.event = asyncio.Event()
        db.log_listeners.append(self._listener)
        # Every record from here on reaches this feed (its listener runs after the append that
        # moves last_lsn); earlier ones are read back from the segment files.
        self.start_lsn = db.log.last_lsn + 1

    def _listener(self, records: list[Record], raws: list[bytes]) -> None:
        # writer thread: hand over without blocking
        try:
            self.loop.call_soon_threadsafe(self._push, records[0].lsn, raws)
        except RuntimeError:
            pass

    def _push(self, first: int, raws: list[bytes]) -> None:
        size = sum(len(r) for r in raws)
        if len(self.items) + len(raws) > self.max_records or self.bytes + size > self.MAX_BYTES:
            self.items.clear()  # the stream reads these back from segment files instead
            self.bytes = 0
            self.dropped_upto = first + len(raws) - 1
        else:
            self.items.extend((first + i, raw) for i, raw in enumerate(raws))
            self.bytes += size
        self.event.set()

    def pop(self) -> tuple[int, bytes]:
        item = self.items.popleft()
        self.bytes -= len(item[1])
        return item

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.db.log_listeners.remove(self._listener)


class Shipper:
    def __init__(self, store: NodeStore, settings: ReplicationSettings):
        self.store = store
        self.settings = settings
        self.port = 0
        self.copies: dict[tuple[str, str], CopyView] = {}
        self.heads: dict[str, HeadTracker] = {}
        self.gates: dict[str, SyncGate] = {}
        self.refused: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
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
        self._server = await asyncio.start_server(self._handle, self.settings.host, self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())
        self._held_watch = asyncio.create_task(self._watch_held_log())
        log.info("replication shipper listening on %s:%d (%s mode)", self.settings.host, self.port, self.settings.mode)

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
            if view is not None and (view.streams or view.opening):
                continue  # it is here (or coming); its pin moves as it catches up
            away = time.monotonic() - (view.away_since if view is not None else self._started)
            stale = lsn < db.log.first_lsn
            if not stale and away < self.settings.held_log_grace_s:
                continue  # a reconnect, not an absence

            def release(name: str = name, node: str = node, lsn: int = lsn, stale: bool = stale) -> int | None:
                # on the writer thread, so no pin or truncation can come in between; the view is
                # looked up again, as a stream may have begun (and made it) since
                now_view = self.copies.get((db.name, node))
                if now_view is not None and (now_view.streams or now_view.opening):
                    return None
                pins = db.pins()
                if "checkpoint" not in pins:
                    return None  # nothing could be truncated yet
                others = min(v for k, v in pins.items() if k != name)
                held = db.log.bytes_from(lsn) - db.log.bytes_from(others)  # what this pin alone keeps
                if not stale and held <= limit:
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
            status = p.get("status", "Disconnected") if view.streams else "Disconnected"
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
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        link = Link(reader, writer, Channel(Role.ACTIVE, self.settings.secret, self.settings.node))
        try:
            try:
                node = await link.handshake(HANDSHAKE_TIMEOUT)
            except codec.AuthFailed as e:
                log.warning("replication: refused connection from %s: %s", where, e)
                self.refused.append({"time": time.time(), "peer": where, "reason": str(e)})
                del self.refused[:-50]
                return
            msg = await link.receive(HANDSHAKE_TIMEOUT)
            kind = msg["t"]
            if kind == "list":
                dbs = [
                    {"name": db.name, "id": db.db_id, "head": db.log.last_lsn, "epoch": db.epoch}
                    for db in self.store.databases.values()
                ]
                await link.send({"t": "dbs", "dbs": dbs}, WRITE_TIMEOUT)
            elif kind in ("seed", "open"):
                db = self._db(msg)
                # Counted before its first await, so the held-log check never lets go of a copy
                # whose stream or seed is about to pin what it needs.
                view = self._view(db.name, node) if db is not None else None
                if view is not None:
                    view.opening += 1
                try:
                    await (self._seed if kind == "seed" else self._stream)(node, msg, link)
                finally:
                    if view is not None:
                        view.opening -= 1
                        if not view.opening:
                            view.away_since = time.monotonic()
            else:
                raise codec.ProtocolError(f"unknown request {kind}")
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

    def _db(self, msg: dict[str, Any]) -> Database | None:
        name = msg.get("db")
        return self.store.databases.get(name) if isinstance(name, str) else None

    async def _pin(self, db: Database, view: CopyView, lsn: int, force: bool = False) -> None:
        """Keep the segments this copy still needs (DESIGN rule 4); moved forward every few
        seconds, never per record (a pin is an fsync'd file)."""
        now = time.monotonic()
        if not force and (lsn == view._pinned or now - view._pinned_at < self.settings.pin_every_s):
            return
        view._pinned, view._pinned_at = lsn, now
        name = f"copy:{view.node}"
        await asyncio.to_thread(db.call_on_writer, lambda: db.set_pin(name, lsn))

    def _view(self, db_name: str, node: str) -> CopyView:
        view = self.copies.get((db_name, node))
        if view is None:
            view = self.copies[(db_name, node)] = CopyView(db_name, node)
        return view

    # ------------------------------------------------------------------ seeding
    async def _seed(self, node: str, msg: dict[str, Any], link: Link) -> None:
        db = self._db(msg)
        if db is None:
            await link.send(codec.error("unknown_db", f"the active has no database {msg.get('db')!r}"))
            return
        view = self._view(db.name, node)
        # Keep every segment from now on until the copy catches up from the snapshot's LSN.
        await self._pin(db, view, db.log.first_lsn, force=True)
        path, lsn, epoch = await asyncio.to_thread(seed.snapshot, db.path)
        try:
            await self._pin(db, view, lsn + 1, force=True)
            size = path.stat().st_size
            log.info("replication: seeding %s on %s from a snapshot at LSN %d (%d bytes)", db.name, node, lsn, size)
            await link.send({"t": "seed_begin", "lsn": lsn, "epoch": epoch, "id": db.db_id, "size": size}, WRITE_TIMEOUT)
            with open(path, "rb") as f:
                while True:
                    chunk = await asyncio.to_thread(f.read, self.settings.seed_chunk)
                    if not chunk:
                        break
                    await link.send({"t": "seed_chunk", "data": chunk}, WRITE_TIMEOUT)
            await link.send({"t": "seed_end"}, WRITE_TIMEOUT)
            # wait for the passive to check the file and say it has it (or hang up)
            await link.receive(300)
        finally:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ streaming
    async def _stream(self, node: str, msg: dict[str, Any], link: Link) -> None:
        db = self._db(msg)
        if db is None:
            await link.send(codec.error("unknown_db", f"the active has no database {msg.get('db')!r}"))
            return
        start = msg.get("from")
        if not isinstance(start, int) or start < 1:
            raise codec.ProtocolError("open without a valid LSN")
        if msg.get("id") != db.db_id:
            await link.send(codec.error("db_id", f"the copy of {db.name} belongs to another database; reseed it"))
            return
        if start > db.log.last_lsn + 1:
            await link.send(
                codec.error("ahead", f"the copy has records up to LSN {start - 1}; the active's log ends at {db.log.last_lsn}"),
            )
            return
        copy_epoch = msg.get("epoch") or 0
        if copy_epoch > db.epoch:
            await link.send(codec.error("epoch", f"the copy is in epoch {copy_epoch}, newer than the active's epoch {db.epoch}"))
            return
        if await self._gone(db, start, link):
            return
        self._track(db)
        view = self._view(db.name, node)
        await self._pin(db, view, start, force=True)
        if await self._gone(db, start, link):  # let go of while it was away, just before this pin
            return
        live = LiveFeed(db, asyncio.get_running_loop(), self.settings.live_buffer_records)
        await link.send({"t": "ok", "head": db.log.last_lsn, "epoch": db.epoch}, HANDSHAKE_TIMEOUT)
        view.streams += 1
        view.acked, view.mode, view.reason = start - 1, "file", None
        sent = Sent(start - 1)
        gate = self.gates.get(db.name)
        if gate:
            gate.set_connected(1)
        acks = asyncio.create_task(self._read_acks(db, view, sent, link))
        sender = asyncio.create_task(self._send_loop(db, view, sent, live, start, link))
        try:
            done, _ = await asyncio.wait({acks, sender}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # raise what ended the stream
        finally:
            for t in (acks, sender):
                if not t.done():
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await t
            live.close()
            view.streams -= 1
            view.reason = "passive disconnected"
            if gate:
                gate.set_connected(-1)

    async def _gone(self, db: Database, start: int, link: Link) -> bool:
        """Tell the passive to reseed when the log it asks for is no longer kept."""
        if start >= db.log.first_lsn:
            return False
        msg = f"LSN {start} is no longer in the active's log (it starts at {db.log.first_lsn})"
        await link.send(codec.error("need_seed", msg))
        return True

    async def _read_acks(self, db: Database, view: CopyView, sent: Sent, link: Link) -> None:
        gate = self.gates.get(db.name)
        tracker = self.heads[db.name]
        while True:
            msg = await link.receive(self.settings.stall_timeout_s + 5)
            if msg["t"] != "ack":
                raise codec.ProtocolError(f"expected ack, got {msg['t']}")
            lsn = msg.get("lsn")
            if not isinstance(lsn, int):
                raise codec.ProtocolError("ack without LSN")
            if lsn > sent.lsn:
                # believed, it would release synchronous callers for records the passive never got
                raise codec.ProtocolError(f"the passive acknowledged LSN {lsn}, but only up to {sent.lsn} was sent")
            info = msg.get("info")
            if isinstance(info, dict):
                view.passive = info
            if lsn > view.acked:
                t = tracker.written_at(lsn)
                if t is not None:
                    view.lag_samples.append((time.monotonic() - t) * 1000)
                view.acked = lsn
                if gate:
                    gate.on_ack(lsn, db.log.last_lsn)
            if view.pin_task is None or view.pin_task.done():
                # in the background: a pin waits its turn on the writer thread, acks must not
                view.pin_task = asyncio.create_task(self._pin(db, view, view.acked + 1))
                self._pin_tasks.add(view.pin_task)
                view.pin_task.add_done_callback(self._pin_tasks.discard)

    async def _send_loop(self, db: Database, view: CopyView, sent: Sent, live: LiveFeed, start: int, link: Link) -> None:
        nxt = start
        s = self.settings
        while True:
            while live.items and live.items[0][0] < nxt:
                live.pop()  # the passive has these already (read from files)
            if live.items and live.items[0][0] == nxt:
                raws, size = [], 0
                while live.items and len(raws) < s.batch_records and size < s.batch_bytes:
                    raws.append(live.pop()[1])
                    size += len(raws[-1])
                view.mode = "block"
                await self._send_batch(db, view, sent, link, nxt, raws, "block")
                nxt += len(raws)
                continue
            head = db.log.last_lsn
            coming = nxt >= live.start_lsn and nxt > live.dropped_upto  # the feed will hand it over
            if nxt <= head and (live.items or not coming):
                # file mode: read back from segments up to the head, or up to what live holds
                upto = live.items[0][0] - 1 if live.items else head
                view.mode = "file"
                nxt = await self._send_from_files(db, view, sent, link, nxt, upto)
                continue
            live.event.clear()
            if not live.items:
                pending = nxt <= db.log.last_lsn  # written; its hand-over is on the way
                try:
                    async with asyncio.timeout(0.5 if pending else s.heartbeat_s):
                        await live.event.wait()
                except TimeoutError:
                    if pending:
                        # never handed over (the store skips listeners when a commit fails after
                        # its append): read it back from the files instead
                        live.dropped_upto = max(live.dropped_upto, db.log.last_lsn)
                    else:
                        await link.send(self._heartbeat(db, view), WRITE_TIMEOUT)

    async def _send_from_files(self, db: Database, view: CopyView, sent: Sent, link: Link, nxt: int, upto: int) -> int:
        s = self.settings
        try:
            gen = db.log.read_from(nxt, upto)
        except LogError as e:
            raise await self._log_failed(db, link, nxt, e) from None

        deferred: list[LogError] = []

        def chunk() -> list[bytes]:
            # Records before a damaged one still go out; the damage is reported right after them.
            if deferred:
                raise deferred[0]
            out, size = [], 0
            try:
                for rec in gen:
                    raw = rec.encode()
                    out.append(raw)
                    size += len(raw)
                    if len(out) >= s.batch_records or size >= s.batch_bytes:
                        break
            except LogError as e:
                if not out:
                    raise
                deferred.append(e)
            return out

        while nxt <= upto:
            try:
                raws = await asyncio.to_thread(chunk)
            except LogError as e:
                raise await self._log_failed(db, link, nxt, e) from None
            if not raws:
                break
            await self._send_batch(db, view, sent, link, nxt, raws, "file")
            nxt += len(raws)
        return nxt

    async def _log_failed(self, db: Database, link: Link, nxt: int, e: LogError) -> Exception:
        lsn = e.lsn if isinstance(e, LogCorruption) and e.lsn else nxt
        code = "corrupt" if isinstance(e, LogCorruption) else "need_seed"
        log.error("replication: cannot ship database %s from LSN %d: %s", db.name, lsn, e)
        await link.send(codec.error(code, f"the active's log of {db.name} is unreadable at LSN {lsn}: {e}", lsn))
        return codec.ProtocolError(f"stream of {db.name} ended: active log unreadable at LSN {lsn}")

    def _heartbeat(self, db: Database, view: CopyView) -> dict[str, Any]:
        tracker = self.heads[db.name]
        head = db.log.last_lsn
        written = tracker.written_at(view.acked + 1) if head > view.acked else None
        return {
            "t": "hb",
            "head": head,
            "head_time": db.log.last_timestamp_us / 1e6,
            "qb": tracker.bytes_after(view.acked, head - view.acked),
            # age of the oldest record the copy has not acknowledged, by the active's clock
            "lag": round(time.monotonic() - written, 3) if written is not None else None,
        }

    async def _send_batch(
        self, db: Database, view: CopyView, sent: Sent, link: Link, first: int, raws: list[bytes], mode: str
    ) -> None:
        msg = self._heartbeat(db, view)
        msg.update({"t": "recs", "id": db.db_id, "first": first, "raws": raws, "mode": mode})
        sent.lsn = first + len(raws) - 1  # before the send: the ack may come back before drain returns
        await link.send(msg, WRITE_TIMEOUT)
