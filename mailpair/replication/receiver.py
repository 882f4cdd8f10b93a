"""The passive side: one copy worker per database pulls, inspects, stores and acknowledges the
active's log, and hands stored records to its replayer.

A worker connects, authenticates, and asks for records from its last stored LSN + 1. With no
usable copy (none yet, or the active no longer has the log it needs) it seeds one first. Every
batch is inspected before it is stored; a batch that fails is never stored and is asked for
again by reconnecting from the stored LSN. Connection trouble (drops, stalls, garbage) puts the
copy in Disconnected and it reconnects with backoff; a damaged log on the active, or an active
that is not the database's rightful writer, puts it in Failed with the reason, until an admin
resumes or reseeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from mailpair.durable import write_json
from mailpair.replication import codec, link, policy, seed, tls
from mailpair.replication.inspect import InspectionFailed, inspect_batch
from mailpair.replication.policy import Phase
from mailpair.replication.replayer import Replayer
from mailpair.replication.settings import ReplicationSettings
from mailpair.store import Database, NodeStore
from mailpair.store.apply import ReplayError
from mailpair.store.continuity import check_next
from mailpair.store.log import LogError, Record
from mailpair.store.schema import get_meta

log = logging.getLogger("mailpair.replication")

CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
SNAPSHOT_TIMEOUT = 300.0  # the active takes the snapshot before the first byte
FATAL_CODES = {"corrupt", "db_id", "ahead", "epoch", "unknown_db"}


class CopyFailed(Exception):
    """The copy cannot go on without an admin (resume or reseed)."""


async def connect(settings: ReplicationSettings) -> link.Link:
    if not settings.peer_host or not settings.peer_port:
        raise ConnectionError("no active configured (peer_replication is empty)")
    return await link.connect(
        settings.peer_host,
        settings.peer_port,
        settings.secret,
        settings.node,
        CONNECT_TIMEOUT,
        HANDSHAKE_TIMEOUT,
        tls.client_context_for(settings),
    )


class CopyWorker:
    def __init__(self, receiver: Receiver, name: str):
        self.receiver = receiver
        self.settings = receiver.settings
        self.store = receiver.store
        self.name = name
        self.db: Database | None = self.store.databases.get(name)
        self.replayer: Replayer | None = None
        self.phase = Phase.INIT
        self.reason: str | None = "waiting for the first connection to the active"
        self.suspended = name in receiver.suspended
        self.reseed_requested = False
        self.head: int | None = None
        self.head_time: float | None = None
        self.queue_bytes = 0
        self.active_lag: float | None = None
        self.mode: str | None = None
        self.seed_progress: float | None = None
        self.last_stored_time: float | None = None
        self.inspection_failures = 0
        self.reconnects = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._job: asyncio.Task | None = None
        # held while records are appended on a worker thread; closing the database takes it too,
        # so a cancelled stream never leaves an append running into a closed log
        self._store_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.db is not None:
            await self._start_replayer()
        self._task = asyncio.create_task(self._run())

    async def _start_replayer(self) -> None:
        self.replayer = Replayer(self.db, self.settings.replay_delay_s, self.settings.checkpoint_every)
        if self.suspended:
            self.replayer.pause()
        await self.replayer.start()

    async def close(self) -> None:
        for t in (self._task, self._job):
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        if self.replayer is not None:
            await self.replayer.close()
        await asyncio.to_thread(self._quiesce)

    def _quiesce(self) -> None:
        with self._store_lock:
            pass

    def _interrupt(self) -> None:
        """Stop what the worker is doing now (a stream or a seed) and look at its flags again."""
        if self._job is not None and not self._job.done():
            self._job.cancel()
        self._wake.set()

    # ------------------------------------------------------------------ admin actions
    def suspend(self) -> None:
        self.suspended = True
        if self.replayer:
            self.replayer.pause()
        self._interrupt()

    def resume(self) -> None:
        self.suspended = False
        if self.phase is Phase.FAILED:
            self.phase, self.reason = Phase.INIT, "resumed by an administrator"
        if self.replayer:
            self.replayer.resume()
        self._interrupt()

    def reseed(self) -> None:
        self.suspended = False
        self.reseed_requested = True
        if self.phase is Phase.FAILED:
            self.phase = Phase.INIT
        self._interrupt()

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while True:
            if self.suspended or self.phase is Phase.FAILED:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            try:
                if self.db is None or self.reseed_requested:
                    self._job = asyncio.create_task(self._seed())
                else:
                    self._job = asyncio.create_task(self._stream())
                await self._job
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                continue  # an admin action interrupted the job
            except codec.PeerError as e:
                if e.code == "need_seed":
                    log.warning("copy of %s: %s; reseeding", self.name, e)
                    self.reseed_requested = True
                    continue
                if e.code in FATAL_CODES:
                    self._fail(f"{e}")
                    continue
                self._disconnected(f"the active said: {e}")
            except CopyFailed as e:
                self._fail(str(e))
                continue
            except codec.AuthFailed as e:
                self._disconnected(f"authentication failed: {e}")
                log.error("copy of %s: %s", self.name, e)
            except InspectionFailed as e:
                self.inspection_failures += 1
                self._disconnected(f"record LSN {e.lsn} failed inspection ({e}); asking the active again")
                log.warning("copy of %s: %s", self.name, self.reason)
            except codec.ProtocolError as e:
                self._disconnected(f"bad data from the active: {e}")
                log.warning("copy of %s: %s", self.name, self.reason)
            except TimeoutError:
                self._disconnected(f"the stream stalled (nothing from the active for {self.settings.stall_timeout_s:.0f}s)")
                log.warning("copy of %s: %s", self.name, self.reason)
            except (OSError, asyncio.IncompleteReadError, LogError) as e:
                self._disconnected(f"{type(e).__name__}: {e}" if str(e) else f"connection lost ({type(e).__name__})")
                log.info("copy of %s: %s", self.name, self.reason)
            except Exception as e:
                log.exception("copy of %s: unexpected error", self.name)
                self._fail(f"unexpected error: {e}")
                continue
            finally:
                self._job = None
            if time.monotonic() - started > 5:
                backoff = self.settings.reconnect_min_s  # it ran a good while: start the backoff again
            self.reconnects += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _fail(self, reason: str) -> None:
        self.phase, self.reason = Phase.FAILED, reason
        log.error("copy of %s FAILED: %s", self.name, reason)

    def _disconnected(self, reason: str) -> None:
        self.phase, self.reason = Phase.DISCONNECTED, reason
        self.seed_progress = None  # a seed cut short starts again from the beginning

    # ------------------------------------------------------------------ seeding
    async def _seed(self) -> None:
        self.phase, self.reason, self.seed_progress = Phase.SEEDING, "building a copy from a snapshot of the active", 0.0
        conn = await connect(self.settings)
        try:
            await conn.send({"t": "seed", "db": self.name}, HANDSHAKE_TIMEOUT)
            begin = codec.expect(await conn.receive(SNAPSHOT_TIMEOUT), "seed_begin")
            size, lsn, db_id = begin.get("size"), begin.get("lsn"), begin.get("id")
            if not (isinstance(size, int) and isinstance(lsn, int) and isinstance(db_id, bytes) and len(db_id) == 16):
                raise codec.ProtocolError("seed_begin without size, LSN and database id")
            stage = await asyncio.to_thread(seed.begin, self.store.data_dir, self.name)
            received = 0
            with open(stage / "state.sqlite", "wb") as f:
                while True:
                    msg = await conn.receive(self.settings.stall_timeout_s)
                    if msg["t"] == "seed_end":
                        break
                    data = codec.expect(msg, "seed_chunk").get("data")
                    if not isinstance(data, bytes):
                        raise codec.ProtocolError("seed chunk without data")
                    await asyncio.to_thread(f.write, data)
                    received += len(data)
                    self.seed_progress = round(min(1.0, received / max(1, size)), 3)
            if received != size:
                raise codec.ProtocolError(f"seed has {received} bytes, the active announced {size}")
            await asyncio.to_thread(_check_snapshot, stage / "state.sqlite", lsn, db_id)
            await asyncio.to_thread(seed.finish, stage, db_id)
            await conn.send({"t": "seed_ok"}, HANDSHAKE_TIMEOUT)
        finally:
            conn.close()
        await self._install(stage)
        self.reseed_requested = False
        self.seed_progress = None
        self.phase, self.reason = Phase.INIT, f"seeded at LSN {lsn}; catching up from the log"
        log.info("copy of %s: seeded from a snapshot at LSN %d", self.name, lsn)

    async def _install(self, stage: Path) -> None:
        """Swap the complete new copy in for the old one (if any)."""
        if self.replayer is not None:
            await self.replayer.close()
            self.replayer = None
        old, self.db = self.db, None
        await asyncio.to_thread(self._quiesce)
        if old is not None:
            self.store.databases.pop(self.name, None)
            await asyncio.to_thread(old.close)
        target = self.store.db_root / self.name
        await asyncio.to_thread(seed.install, stage, target)
        db = Database(target, self.store.config, writable=False)
        await asyncio.to_thread(db.open)
        self.store.databases[self.name] = db
        self.db = db
        self.head = None
        await self._start_replayer()

    # ------------------------------------------------------------------ streaming
    async def _stream(self) -> None:
        db = self.db
        conn = await connect(self.settings)
        active = conn.peer
        frames: asyncio.Queue = asyncio.Queue(maxsize=16)
        pump = asyncio.create_task(self._pump(conn, frames))
        try:
            epoch = max(db.log.last_epoch, db.epoch)
            await conn.send(
                {"t": "open", "db": self.name, "id": db.db_id, "from": db.log.last_lsn + 1, "epoch": epoch},
                HANDSHAKE_TIMEOUT,
            )
            ok = await frames.get()
            if isinstance(ok, BaseException):
                raise ok
            codec.expect(ok, "ok")
            if not isinstance(ok.get("epoch"), int) or ok["epoch"] < epoch:
                raise CopyFailed(f"the active {active} is in epoch {ok.get('epoch')}, older than this copy's epoch {epoch}")
            self.head = ok.get("head")
            # The last failure's reason stays until the copy stores again: a copy that reconnects
            # and fails the same way again (a full disk) keeps saying why while it catches up.
            self.phase = Phase.CONNECTED
            log.info("copy of %s: streaming from %s at LSN %d", self.name, active, db.log.last_lsn + 1)
            while True:
                msgs = [await frames.get()]
                while not frames.empty() and len(msgs) < 64:
                    msgs.append(frames.get_nowait())
                err = next((m for m in msgs if isinstance(m, BaseException)), None)
                if err is None:
                    await self._take(msgs, conn)
                    continue
                # The active may hang up right after an error message: failing to acknowledge
                # what came before it must not hide the error itself.
                with contextlib.suppress(OSError):  # a reset, or a drain that timed out
                    await self._take(msgs[: msgs.index(err)], conn)
                raise err
        finally:
            # cancel until it is really gone: a pump left blocked on a full queue would hang
            # this stream, its worker and the node's shutdown
            while not pump.done():
                pump.cancel()
                await asyncio.wait({pump}, timeout=0.1)
            conn.close()

    async def _pump(self, conn: link.Link, frames: asyncio.Queue) -> None:
        """Read frames ahead while the last batch is being stored; an error ends the queue."""
        try:
            while True:
                await frames.put(await conn.receive(self.settings.stall_timeout_s))
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            await frames.put(e)

    async def _take(self, msgs: list[dict[str, Any]], conn: link.Link) -> None:
        """Inspect and store the record batches among msgs, then acknowledge."""
        batches = []
        for m in msgs:
            if m["t"] == "recs":
                batches.append(m)
            elif m["t"] != "hb":
                raise codec.ProtocolError(f"unexpected {m['t']} message in the stream")
            head = m.get("head")
            if isinstance(head, int):
                self.head = max(self.head or 0, head)
                self.head_time = m.get("head_time")
                self.queue_bytes = m.get("qb") or 0
                self.active_lag = m.get("lag")
        error: BaseException | None = None
        if batches:
            mode = batches[-1].get("mode")
            if mode != self.mode:
                log.info("copy of %s: %s mode at LSN %s", self.name, mode, batches[-1].get("first"))
                self.mode = mode
            try:
                records = await asyncio.to_thread(self._inspect_and_store, batches)
            except _PartlyStored as p:
                records, error = p.records, p.error
            for rec, size in records:
                self.replayer.added(rec.lsn, rec.timestamp_us / 1e6, size)
            if records:
                self.last_stored_time = records[-1][0].timestamp_us / 1e6
                self.reason = None
        await conn.send({"t": "ack", "lsn": self.db.log.last_lsn, "info": self.status()}, HANDSHAKE_TIMEOUT)
        if error is not None:
            raise error

    def _inspect_and_store(self, batches: list[dict[str, Any]]) -> list[tuple[Record, int]]:
        """Writer-side work off the loop. What passed inspection before a failure is stored;
        the failing record and everything after it are asked for again."""
        db = self.db
        expected = db.log.last_lsn + 1
        epoch = max(db.log.last_epoch, db.epoch)
        records: list[Record] = []
        raws: list[bytes] = []
        error: BaseException | None = None
        for m in batches:
            first, batch_raws = m.get("first"), m.get("raws")
            try:
                if first != expected or not isinstance(batch_raws, list):
                    raise InspectionFailed(f"batch starts at LSN {first}, expected {expected}", expected)
                recs = inspect_batch(batch_raws, expected, epoch, db.db_id, m.get("id"))
            except InspectionFailed as e:
                error = e
                break
            records += recs
            raws += batch_raws
            expected += len(recs)
            if recs:
                epoch = recs[-1].epoch
        if records:
            with self._store_lock:
                # Inspection above checked the records follow one another; the first must still
                # follow the log as it is now (continuity's rule, as store_received keeps it). The
                # append runs here rather than on the database's writer thread so a replay step
                # there never delays storing and acknowledging (copy lag, synchronous mode). On a
                # passive this worker is the log's only appender; the log's own lock orders the
                # append with replay's reads.
                try:
                    check_next(records[0].lsn, records[0].epoch, db.log.last_lsn + 1, db.log.last_epoch)
                except ReplayError as e:
                    raise InspectionFailed(str(e), records[0].lsn) from None
                db.log.append(raws, records[-1])
        stored = [(r, len(raw)) for r, raw in zip(records, raws, strict=True)]
        if error is not None:
            raise _PartlyStored(stored, error)
        return stored

    # ------------------------------------------------------------------ status
    def state(self) -> tuple[str, str | None]:
        return policy.copy_status(
            phase=self.phase,
            reason=self.reason,
            suspended=self.suspended,
            replay_error=self.replayer.error if self.replayer is not None else None,
            copy_queue=self._copy_queue(),
            healthy_queue=self.settings.healthy_queue,
        )

    def _copy_queue(self) -> int | None:
        if self.db is None or self.head is None:
            return None
        return max(0, self.head - self.db.log.last_lsn)

    def status(self) -> dict[str, Any]:
        state, reason = self.state()
        db = self.db
        queue = self._copy_queue()
        stored = db.log.last_lsn if db else None
        applied = db.applied_lsn if db else None
        lag = None
        if queue == 0:
            lag = 0.0
        elif queue and isinstance(self.active_lag, int | float):
            lag = self.active_lag
        elif queue and self.head_time and self.last_stored_time:
            lag = round(max(0.0, self.head_time - self.last_stored_time), 3)
        r = self.replayer
        return {
            "database": self.name,
            "node": self.settings.node,
            "status": state,
            "reason": reason,
            "copy_queue": queue,
            "copy_queue_bytes": self.queue_bytes if queue else 0,
            "replay_queue": (stored - applied) if db else None,
            "replay_queue_bytes": r.pending_bytes if r else None,
            "stored_lsn": stored,
            "replayed_lsn": applied,
            "last_stored_time": self.last_stored_time,
            "last_replayed_time": r.last_replayed_time if r else None,
            "copy_lag_s": lag,
            "seed_progress": self.seed_progress,
            "mode": self.mode,
            "transport": self.settings.transport,  # "plain" only when the operator asked for it
            "replay_delay_s": self.settings.replay_delay_s,
            "inspection_failures": self.inspection_failures,
            "reconnects": self.reconnects,
        }


class _PartlyStored(Exception):
    def __init__(self, records: list[tuple[Record, int]], error: BaseException):
        super().__init__(str(error))
        self.records = records
        self.error = error


def _check_snapshot(path: Path, lsn: int, db_id: bytes) -> None:
    """The received snapshot is a sound SQLite file of this database at the announced LSN."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("PRAGMA quick_check").fetchone()
        if not row or row[0] != "ok":
            raise codec.ProtocolError(f"received snapshot fails SQLite's check: {row}")
        if get_meta(conn, "db_id") != db_id or get_meta(conn, "applied_lsn", 0) != lsn:
            raise codec.ProtocolError("received snapshot is not the announced database at the announced LSN")
    except sqlite3.DatabaseError as e:
        raise codec.ProtocolError(f"received snapshot is not a database: {e}") from None
    finally:
        conn.close()


class Receiver:
    def __init__(self, store: NodeStore, settings: ReplicationSettings):
        self.store = store
        self.settings = settings
        self.workers: dict[str, CopyWorker] = {}
        self.problem: str | None = None
        self._flags = Path(store.data_dir) / "replication" / "suspended.json"
        self.suspended: set[str] = set()
        self._control: asyncio.Task | None = None

    async def start(self) -> None:
        await asyncio.to_thread(seed.cleanup, self.store.data_dir)
        try:
            self.suspended = set(json.loads(self._flags.read_text()))
        except (FileNotFoundError, ValueError):
            self.suspended = set()
        for name, why in self.store.broken.items():
            w = CopyWorker(self, name)
            w.phase, w.reason = Phase.FAILED, f"the copy on this node is damaged ({why}); reseed it"
            self.workers[name] = w
            await w.start()
        for name in list(self.store.databases):
            await self._worker(name)
        self._control = asyncio.create_task(self._discover())

    async def _worker(self, name: str) -> CopyWorker:
        w = self.workers.get(name)
        if w is None:
            w = self.workers[name] = CopyWorker(self, name)
            await w.start()
        return w

    async def _discover(self) -> None:
        """Learn the active's databases, so new ones get a copy too."""
        backoff = self.settings.reconnect_min_s
        while True:
            try:
                conn = await connect(self.settings)
                try:
                    await conn.send({"t": "list"}, HANDSHAKE_TIMEOUT)
                    msg = codec.expect(await conn.receive(HANDSHAKE_TIMEOUT), "dbs")
                finally:
                    conn.close()
                for d in msg.get("dbs") or []:
                    if isinstance(d, dict) and isinstance(d.get("name"), str):
                        await self._worker(d["name"])
                self.problem = None
                backoff = self.settings.reconnect_min_s
                await asyncio.sleep(2.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.problem = f"cannot reach the active: {e}" if str(e) else f"cannot reach the active ({type(e).__name__})"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)

    async def close(self) -> None:
        if self._control is not None:
            self._control.cancel()
            with contextlib.suppress(BaseException):
                await self._control
        for w in self.workers.values():
            await w.close()

    def status(self) -> list[dict[str, Any]]:
        return [self.workers[n].status() for n in sorted(self.workers)]

    def _get(self, name: str) -> CopyWorker:
        w = self.workers.get(name)
        if w is None:
            raise ValueError(f"this node has no copy of database {name!r}")
        return w

    def _save_flags(self) -> None:
        """Durably: a suspension an admin asked for survives a crash right after the answer."""
        self._flags.parent.mkdir(parents=True, exist_ok=True)
        write_json(self._flags, sorted(self.suspended))

    def suspend(self, name: str) -> None:
        self._get(name).suspend()
        self.suspended.add(name)
        self._save_flags()

    def resume(self, name: str) -> None:
        self._get(name).resume()
        self.suspended.discard(name)
        self._save_flags()

    def reseed(self, name: str) -> None:
        self._get(name).reseed()
        self.suspended.discard(name)
        self._save_flags()
