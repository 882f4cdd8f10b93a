"""One mailbox database: its log, its materialised state, and the thread that writes both.

Rules this module keeps (../shared/DESIGN.md, rules 1, 4, 5):
- All writes happen on one dedicated writer thread per database. Requests queue up while the
  thread is busy; each turn takes every waiting request, and those arriving while it decides
  (group commit), decides and applies them inside one open SQLite transaction, appends their
  records to the log with one fsync, and only then commits the transaction and answers the
  callers. So the committed database never holds the effect of a record that is not durable, and
  a caller told "done" can read its change at once.
- If the log cannot be written (full disk, size limit), the transaction is rolled back: nothing
  changed, callers get StoreUnavailable, and later requests work again once there is room. A
  batch the disk cannot take whole is refused before any of its records is written.
- If the log was written but the state could not be committed, the records happened: the
  database replays them (the replay used by crash recovery and by the passive copy) at once, or
  before it accepts anything else.
- Reads use their own connection on their own thread (WAL lets them run beside the writer).
- Truncation deletes a segment only when no pin needs it: the checkpoint, each copy, and, while
  backups are taken, the first LSN no backup holds (rule 4).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpair.durable import fsync_file, write_atomic, write_json
from mailpair.store import decide, names
from mailpair.store.apply import ReplayError, apply_records
from mailpair.store.checkpointer import Checkpointer
from mailpair.store.continuity import StaleEpoch as StaleEpoch  # where callers have always found it
from mailpair.store.continuity import check_next
from mailpair.store.errors import NotActive, StoreError, StoreUnavailable, TooLarge
from mailpair.store.log import DEFAULT_SEGMENT_SIZE, LogCorruption, LogError, LogFull, Record, TransactionLog, record_capacity
from mailpair.store.records import RecordType, pack, unpack
from mailpair.store.schema import connect, get_meta, set_meta

logger = logging.getLogger("mailpair.store")

CHECKPOINT_EVERY = 20_000  # records between automatic checkpoints
MAX_BATCH = 512  # operations one group commit takes in at most (bounds its latency)
ROOM_MARGIN = 256 * 1024  # free disk a group commit leaves beyond twice its own size
# Written by the backup tool after each backup (mailpair/backup/pin.py): the first LSN no backup
# holds yet. While it exists (backups are configured), truncation keeps that LSN and after.
BACKUP_PIN_FILE = "backup.json"


@dataclass(frozen=True, slots=True)
class Change:
    """What a committed record changed, for listeners (IMAP IDLE, replication, metrics)."""

    lsn: int
    type: RecordType
    mailbox_ids: tuple[int, ...]
    accounts: tuple[str, ...]


RECORD_SLACK = 1024  # what a deliver or append record carries beside the message, its analysis and recipients


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    segment_size: int = DEFAULT_SEGMENT_SIZE
    max_log_bytes: int | None = None
    fsync: bool = True
    checkpoint_every: int = CHECKPOINT_EVERY
    replay_batch: int = 2000  # records per replay transaction (crash recovery, the passive's replay)


class _Request:
    """An operation waiting for the writer. Blocking callers wait on `future`; asyncio callers on
    `afut`, resolved in one call_soon_threadsafe per batch rather than one wake-up per request."""

    __slots__ = ("kind", "args", "future", "loop", "afut")

    def __init__(self, kind: str, args: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None):
        self.kind = kind
        self.args = args
        self.loop = loop
        if loop is None:
            self.future: concurrent.futures.Future = concurrent.futures.Future()
            self.afut: asyncio.Future | None = None
        else:
            self.afut = loop.create_future()


def _settle_async(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for afut, result, err in items:
        if afut.done():
            continue
        if err is not None:
            afut.set_exception(err)
        else:
            afut.set_result(result)


def _resolve(outcomes: list[tuple[_Request, Any, BaseException | None]]) -> None:
    """Answer callers: blocking ones at once, asyncio ones batched per event loop."""
    per_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for req, result, err in outcomes:
        if req.loop is not None:
            per_loop.setdefault(req.loop, []).append((req.afut, result, err))
        elif not req.future.done():
            if err is not None:
                req.future.set_exception(err)
            else:
                req.future.set_result(result)
    for loop, items in per_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_async, items)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


_STOP = object()


def _changes_of(rtype: RecordType, p: dict[str, Any], lsn: int) -> Change:
    boxes: tuple[int, ...] = ()
    accounts: tuple[str, ...] = ()
    if rtype in (RecordType.DELIVER, RecordType.APPEND):
        boxes = tuple(t[1] for t in p["targets"])
        accounts = tuple(t[0] for t in p["targets"])
    elif rtype in (RecordType.FLAGS, RecordType.EXPUNGE):
        boxes = (p["mailbox"],)
    elif rtype in (RecordType.COPY, RecordType.MOVE):
        boxes = (p["src"], p["dst"])
    elif rtype is RecordType.MAILBOX_DELETE:
        boxes = (p["id"],)
    elif "account" in p:
        accounts = (p["account"],)
    elif "name" in p:
        accounts = (p["name"],)
    return Change(lsn, rtype, boxes, accounts)


class Database:
    """A database directory: `log/` (segments), `state.sqlite`, `pins.json`, `id`."""

    def __init__(self, path: Path, config: DatabaseConfig | None = None, writable: bool = True):
        self.path = Path(path)
        self.name = self.path.name
        self.config = config or DatabaseConfig()
        self.writable = writable
        self.epoch = 1
        self._listeners: list[Callable[[list[Change]], None]] = []
        # Called on the writer thread right after records are durable in the log (the shipper).
        self.log_listeners: list[Callable[[list[Record], list[bytes]], None]] = []
        # Synchronous replication: when set, callers of a batch are answered only when
        # ack_waiter(last_lsn, release) calls release (the passive has stored last_lsn).
        self.ack_waiter: Callable[[int, Callable[[], None]], None] | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.name}")
        self._read_conn: sqlite3.Connection | None = None
        self._needs_replay = False
        self._carried: Any = None  # an item a batch took from the queue but could not take in: next turn starts with it
        self._checkpointer: Checkpointer | None = None
        self.applied_lsn = 0
        self.commit_latency: list[float] = []  # seconds; drained by metrics
        self.stats = {"commits": 0, "records": 0, "batches": 0, "redone": 0}

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: Path, config: DatabaseConfig | None = None) -> Database:
        path = Path(path)
        names.check_database(path.name)
        if (path / "id").exists():
            raise StoreError(f"database {path.name} exists")
        path.mkdir(parents=True, exist_ok=True)
        db_id = uuid.uuid4()
        write_atomic(path / "id", f"{db_id}\n")
        db = cls(path, config)
        db.open()
        return db

    @property
    def db_id(self) -> bytes:
        return uuid.UUID((self.path / "id").read_text().strip()).bytes

    def open(self) -> None:
        """Open the log (cutting a torn tail), then replay what the state has not applied."""
        if not (self.path / "id").exists():
            raise StoreError(f"{self.path} is not a mailpair database (no id file)")
        self.log = TransactionLog(
            self.path / "log",
            self.db_id,
            segment_size=self.config.segment_size,
            max_bytes=self.config.max_log_bytes,
            fsync=self.config.fsync,
        )
        self.log.open()
        try:
            self._conn = connect(self.path / "state.sqlite", autocheckpoint=False)
            state_id = get_meta(self._conn, "db_id")
        except sqlite3.DatabaseError as e:
            self.log.close()
            raise StoreError(
                f"database {self.name}: state file {self.path / 'state.sqlite'} is damaged ({e}); "
                f"the log holds the truth: `mailpair db rebuild {self.name} --data {self.path.parent.parent}` "
                "rebuilds it (on a passive copy, `mailpair copy reseed` also does)"
            ) from None
        if state_id is None:
            set_meta(self._conn, "db_id", self.db_id)
        elif state_id != self.db_id:
            raise StoreError(f"{self.path}/state.sqlite belongs to another database")
        self.applied_lsn = get_meta(self._conn, "applied_lsn", 0)
        self.epoch = max(get_meta(self._conn, "epoch", 1), self.log.last_epoch)
        if not self.log.segments() and self.applied_lsn > 0:
            # A seeded copy: the state came from a snapshot, the log starts right after it.
            self.log.last_lsn = self.applied_lsn
        if self.applied_lsn > self.log.last_lsn:
            raise LogCorruption(
                f"database {self.name}: state has applied LSN {self.applied_lsn} but the log ends at "
                f"{self.log.last_lsn}; records the state holds are missing from the log",
                lsn=self.log.last_lsn + 1,
            )
        self._checkpointer = Checkpointer(self.path / "state.sqlite", self.name)
        self.replay_pending()
        self._checkpointed = self.checkpoint_lsn()
        self._writer = threading.Thread(target=self._write_loop, name=f"write-{self.name}", daemon=True)
        self._writer.start()

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
            self._conn.close()
        self._reader.submit(self._close_reader).result()
        self._reader.shutdown()
        self.log.close()

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    # ------------------------------------------------------------------ replay
    def replay_records(self, records: Iterable[Record]) -> int:
        """Apply records in LSN order after applied_lsn, in one transaction. The single replay
        path: crash recovery, the passive copy, and recovery after a failed commit use it."""
        conn = self._conn
        count = 0
        last = None
        changes: list[Change] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            epoch = get_meta(conn, "epoch", 1)
            items: list[tuple[int, dict[str, Any], int, int]] = []
            for rec in records:
                if rec.lsn <= self.applied_lsn:
                    continue
                check_next(rec.lsn, rec.epoch, self.applied_lsn + count + 1, epoch)
                epoch = rec.epoch
                payload = unpack(rec.payload)
                items.append((rec.type, payload, rec.lsn, rec.timestamp_us))
                changes.append(_changes_of(RecordType(rec.type), payload, rec.lsn))
                count += 1
                last = rec
            apply_records(conn, items)
            if last is not None:
                set_meta(conn, "applied_lsn", last.lsn)
                set_meta(conn, "epoch", epoch)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if last is not None:
            self.applied_lsn = last.lsn
            self.epoch = max(self.epoch, epoch)
            if self._checkpointer is not None:
                self._checkpointer.committed(count)
            self._notify(changes)
        return count

    def replay_pending(self, batch: int | None = None) -> int:
        """Replay everything in the log after applied_lsn (crash recovery)."""
        batch = batch or self.config.replay_batch
        total = 0
        while self.applied_lsn < self.log.last_lsn:
            upto = min(self.log.last_lsn, self.applied_lsn + batch)
            total += self.replay_records(self.log.read_from(self.applied_lsn + 1, upto))
        self._needs_replay = False
        return total

    # ------------------------------------------------------------------ passive copy
    def replay_stored(self, upto: int | None = None, batch: int | None = None) -> int:
        """Apply stored records up to `upto` (default: all) on the writer thread: the passive's
        replayer. Returns how many were applied."""
        batch = batch or self.config.replay_batch

        def replay() -> int:
            total = 0
            end = self.log.last_lsn if upto is None else min(upto, self.log.last_lsn)
            while self.applied_lsn < end:
                stop = min(end, self.applied_lsn + batch)
                total += self.replay_records(self.log.read_from(self.applied_lsn + 1, stop))
            return total

        return self.call_on_writer(replay)

    def set_writable(self, writable: bool, epoch: int | None = None) -> None:
        """Change role, ordered with writes; with an epoch higher than the current one, later
        records carry it. It writes no record: to begin an epoch with the EPOCH record that shows
        in the log where it began, commit the `epoch` operation (it raises the epoch itself)."""

        def change() -> None:
            self.writable = writable
            if epoch is not None and epoch > self.epoch:
                self.epoch = epoch

        self.call_on_writer(change)

    # ------------------------------------------------------------------ writes
    def _enqueue(self, req: _Request) -> None:
        if req.kind not in decide.DECIDERS:
            _resolve([(req, None, StoreError(f"unknown operation {req.kind}"))])
        elif (too_large := self._too_large(req.args)) is not None:
            _resolve([(req, None, too_large)])
        elif not self.writable:
            _resolve([(req, None, NotActive(f"database {self.name} is a passive copy on this node"))])
        elif self._writer is None:
            _resolve([(req, None, StoreUnavailable(f"database {self.name} is closed"))])
        else:
            self._queue.put(req)

    def _too_large(self, args: dict[str, Any]) -> TooLarge | None:
        """A message whose record would not fit a log segment is refused here, before the writer:
        in a group commit it would fail every delivery beside it. (The size limit itself is the
        protocols' to hold, on the message as the client sent it, before trace headers are added.)"""
        raw = args.get("raw")
        if raw is None:
            return None
        recipients = sum(64 + len(user) + len(folder or "") for user, folder in args.get("recipients") or ())
        record = len(raw) + len(args.get("env") or b"") + len(args.get("bs") or b"") + recipients + RECORD_SLACK
        if record > record_capacity(self.config.segment_size):
            return TooLarge(
                f"message of {len(raw)} bytes with its analysis needs a log record of about {record} bytes, "
                f"more than a segment of {self.config.segment_size} bytes holds"
            )
        return None

    def submit(self, kind: str, args: dict[str, Any]) -> concurrent.futures.Future:
        """Queue an operation for the writer; the future resolves once it is durable and applied."""
        req = _Request(kind, args)
        self._enqueue(req)
        return req.future

    def commit(self, kind: str, **args: Any) -> Any:
        """Blocking form, for the CLI and tests."""
        return self.submit(kind, args).result()

    async def acommit(self, kind: str, **args: Any) -> Any:
        req = _Request(kind, args, asyncio.get_running_loop())
        self._enqueue(req)
        return await req.afut

    def _write_loop(self) -> None:
        while True:
            if self._carried is not None:
                item, self._carried = self._carried, None
            else:
                item = self._queue.get()
            batch: list[_Request] = []
            while isinstance(item, _Request) and len(batch) < MAX_BATCH:
                batch.append(item)
                item = self._next_nowait()
            if batch:
                self._carried = item  # for the next turn: a call or a stop comes after this batch
                try:
                    self._commit_batch(batch)
                except BaseException as e:  # never leave a caller waiting, nor a transaction open
                    logger.exception("database %s: write failed", self.name)
                    if self._conn is not None:
                        _rollback(self._conn)
                    if self.log.last_lsn > self.applied_lsn:
                        self._needs_replay = True  # durable records the state lacks: replay them first
                    _resolve([(req, None, StoreUnavailable(f"write failed: {e}")) for req in batch])
                continue
            if isinstance(item, _CallRequest):
                try:
                    item.future.set_result(item.fn())
                except BaseException as e:
                    item.future.set_exception(e)
            elif item is _STOP:
                return

    def _commit_batch(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        if self._needs_replay:
            try:
                self.replay_pending()
            except Exception as e:
                _resolve([(req, None, StoreUnavailable(f"database {self.name} cannot catch up: {e}")) for req in batch])
                return
        if not self.writable:
            _resolve([(req, None, NotActive(f"database {self.name} is a passive copy on this node")) for req in batch])
            return
        conn = self._conn
        now_us = time.time_ns() // 1000
        conn.execute("BEGIN IMMEDIATE")
        try:
            records, payloads, outcomes = self._decide_batch(batch, now_us, careful=False)
        except Exception as e:
            logger.warning("database %s: a record of a batch cannot be applied (%s); applying one at a time", self.name, e)
            self.stats["redone"] += 1
            _rollback(conn)
            conn.execute("BEGIN IMMEDIATE")
            records, payloads, outcomes = self._decide_batch(batch, now_us, careful=True)
        try:
            if records:
                # inside the open transaction, and before the log: once records are durable
                # nothing may fail that would tell their callers they did not happen
                set_meta(conn, "applied_lsn", records[-1].lsn)
                set_meta(conn, "epoch", records[-1].epoch)
                raws = [r.encode() for r in records]
                self._check_room(sum(len(r) for r in raws))
                self.log.append(raws, records[-1])
                self._durable(records, raws)
        except (LogError, OSError) as e:
            _rollback(conn)
            _resolve([(req, None, StoreUnavailable(f"cannot write the log: {e}")) for req, _, _ in outcomes])
            return
        replayed = False
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(conn)
            # The records are durable in the log, so they happened (the log is the truth): apply
            # them by replay now, and the callers hear so. If that fails too, replay comes first
            # once the state can be written, and the callers hear when it will happen.
            try:
                self.replay_pending()
                replayed = True
            except Exception as e2:
                self._needs_replay = True
                logger.error("database %s: cannot update the state (%s; replay: %s)", self.name, e, e2)
                err = StoreUnavailable(f"cannot update the database now ({e}); the change is in the log and will be applied")
                _resolve([(req, None, err) for req, _, _ in outcomes])
                return
        if records:
            self.applied_lsn = records[-1].lsn
            self.epoch = max(self.epoch, records[-1].epoch)
            self.stats["records"] += len(records)
            self._checkpointer.committed(len(records))
        self.stats["batches"] += 1
        self.stats["commits"] += len(outcomes)

        def release() -> None:
            elapsed = time.perf_counter() - started
            if len(self.commit_latency) < 100_000:
                self.commit_latency.append(elapsed)
            _resolve(outcomes)

        waiter = self.ack_waiter
        if records and waiter is not None:
            waiter(records[-1].lsn, release)
        else:
            release()
        if records and not replayed:  # replay told the listeners itself
            if self._listeners:
                self._notify([_changes_of(RecordType(r.type), p, r.lsn) for r, p in zip(records, payloads, strict=True)])
            if self.applied_lsn - self._checkpointed >= self.config.checkpoint_every:
                self._checkpoint()

    def _decide_batch(
        self, batch: list[_Request], now_us: int, careful: bool
    ) -> tuple[list[Record], list[dict[str, Any]], list[tuple[_Request, Any, BaseException | None]]]:
        """Decide the batch's operations in order and apply their records, inside the open
        transaction. Deliveries are applied in runs, after the deliveries that follow them are
        decided (the Allocator counts the UIDs and bytes a run takes); any other operation first
        applies the run before it, since it may read what the run changes. Deciding only reads,
        so an operation refused there fails alone. A record that cannot be applied spoils the
        transaction: the exception goes to the caller, who rolls back and asks again, careful,
        where every record is applied at once inside a savepoint and a bad one fails alone."""
        conn = self._conn
        alloc = decide.Allocator(conn, now_us, self.epoch)
        records: list[Record] = []
        payloads: list[dict[str, Any]] = []
        outcomes: list[tuple[_Request, Any, BaseException | None]] = []
        run: list[tuple[int, dict[str, Any], int, int]] = []

        def apply_run() -> None:
            if run:
                apply_records(conn, run)
                run.clear()
                alloc.applied()  # the state holds the run now: the Allocator reads it afresh

        lsn = self.log.last_lsn
        i = 0
        while True:
            if i == len(batch):
                # Requests that came in while this batch was being decided join it, so they share
                # its fsync instead of waiting for the next one; a call or a stop ends the batch.
                if careful or self._carried is not None or len(batch) >= MAX_BATCH:
                    break
                nxt = self._next_nowait()
                if not isinstance(nxt, _Request):
                    self._carried = nxt
                    break
                batch.append(nxt)
            req = batch[i]
            i += 1
            rtype, fn = decide.DECIDERS[req.kind]
            defer = not careful and req.kind in decide.DEFERRED
            if not defer:
                apply_run()
            try:
                payload, result = fn(conn, alloc, req.args)
                rec_epoch = payload["epoch"] if payload is not None and rtype is RecordType.EPOCH else alloc.epoch
                rec = None if payload is None else Record(lsn + 1, rec_epoch, now_us, int(rtype), pack(payload))
            except (StoreError, ValueError, ReplayError, sqlite3.IntegrityError) as e:
                outcomes.append((req, None, e if isinstance(e, StoreError) else StoreError(str(e))))
                continue
            except Exception as e:
                # An argument no record can hold (an int over 64 bits, say) or a bug: this
                # operation fails alone; nothing was written for it.
                logger.exception("database %s: %s failed", self.name, req.kind)
                outcomes.append((req, None, StoreError(f"{req.kind} cannot be done: {type(e).__name__}: {e}")))
                continue
            if rec is not None:
                item = (int(rtype), payload, rec.lsn, now_us)
                if defer:
                    run.append(item)
                    alloc.deferred(payload)
                elif not careful:
                    apply_records(conn, [item])
                    alloc.applied()
                else:
                    conn.execute("SAVEPOINT op")
                    try:
                        apply_records(conn, [item])
                    except Exception as e:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        alloc.applied()
                        if not isinstance(e, ReplayError | sqlite3.IntegrityError):
                            logger.exception("database %s: %s cannot be applied", self.name, req.kind)
                        outcomes.append((req, None, StoreError(f"{req.kind} cannot be done: {e}")))
                        continue
                    conn.execute("RELEASE op")
                    alloc.applied()
                lsn += 1
                records.append(rec)
                alloc.epoch = rec.epoch
                payloads.append(payload)
                if isinstance(result, dict):
                    result["lsn"] = rec.lsn  # a dict the decider made for this call
            outcomes.append((req, result, None))
        apply_run()
        return records, payloads, outcomes

    def _durable(self, records: list[Record], raws: list[bytes]) -> None:
        """Tell the log listeners (the shipper) as soon as records are durable, before the state
        commits: the passive's round trip then overlaps the COMMIT, and records durable in the
        log happen whatever the COMMIT does (a failed one is made good by replay)."""
        for fn in list(self.log_listeners):
            try:
                fn(records, raws)
            except Exception:
                logger.exception("log listener failed")

    def _check_room(self, nbytes: int) -> None:
        """Refuse a batch the disk cannot take whole: its records in the log, then the state's
        pages for them (SQLite writes those at COMMIT, after the log). A record made durable
        whose state then could not be written would still be applied later, since the log is
        the truth, so a caller told "no" would see the change happen after all."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        if free < 2 * nbytes + ROOM_MARGIN:
            raise LogFull(f"no space left on the disk for database {self.name} ({free} bytes free)")

    def _next_nowait(self) -> Any:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    # ------------------------------------------------------------------ checkpoint and pins
    def _pins_path(self) -> Path:
        return self.path / "pins.json"

    def _own_pins(self) -> dict[str, int]:
        try:
            return json.loads(self._pins_path().read_text())
        except FileNotFoundError:
            return {}

    def pins(self) -> dict[str, int]:
        """Every pin: this database's own (pins.json) and, once a backup was taken, "backup",
        the first LSN no backup holds (the backup tool writes it, beside the node)."""
        pins = self._own_pins()
        backup = self.last_backup()
        if backup is not None:
            pins["backup"] = int(backup["lsn"])
        return pins

    def last_backup(self) -> dict[str, Any] | None:
        """What the backup tool last wrote here (lsn, id, kind, finished), or None."""
        try:
            backup = json.loads((self.path / BACKUP_PIN_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # unreadable: keep every segment from the log's start rather than guess (rule 4)
            logger.error("database %s: %s is unreadable; backups pin the whole log", self.name, BACKUP_PIN_FILE)
            return {"lsn": self.log.first_lsn}
        return backup if isinstance(backup.get("lsn"), int) else None

    def set_pin(self, name: str, lsn: int | None) -> None:
        """A pin is the first LSN its owner still needs; None removes it."""
        pins = self._own_pins()
        if lsn is None:
            pins.pop(name, None)
        else:
            pins[name] = int(lsn)
        write_json(self._pins_path(), pins, sort_keys=True)

    def checkpoint_lsn(self) -> int:
        return self.pins().get("checkpoint", 1) - 1

    def _checkpoint(self) -> None:
        """Make the state file durable (WAL checkpoint, fsync) and pin only what comes after."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fsync_file(self.path / "state.sqlite")
        self.set_pin("checkpoint", self.applied_lsn + 1)
        self._checkpointed = self.applied_lsn
        self.truncate()

    def checkpoint(self) -> None:
        """Checkpoint from any thread: runs on the writer, between batches."""
        self.call_on_writer(self._checkpoint)

    def call_on_writer(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the writer thread, ordered with writes (checkpoints, role changes)."""
        req = _CallRequest(fn)
        if self._writer is None:
            return fn()
        self._queue.put(req)
        return req.future.result()

    def truncate(self) -> list[str]:
        """Delete segments no pin needs. The checkpoint pin is always honoured: with no checkpoint
        yet, nothing is deleted."""
        pins = self.pins()
        if "checkpoint" not in pins:
            return []
        return self.log.truncate_before(min(pins.values()))

    # ------------------------------------------------------------------ reads
    def _reader_conn(self) -> sqlite3.Connection:
        if self._read_conn is None:
            self._read_conn = connect(self.path / "state.sqlite", readonly=True)
        return self._read_conn

    def read_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._reader.submit(lambda: fn(self._reader_conn(), *args)).result()

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(conn, *args) on this database's reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self._reader_conn(), *args))

    # ------------------------------------------------------------------ listeners
    def add_listener(self, fn: Callable[[list[Change]], None]) -> None:
        """fn is called on the writer thread after each commit; it must not block."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[list[Change]], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, changes: list[Change]) -> None:
        for fn in list(self._listeners):
            try:
                fn(changes)
            except Exception:
                logger.exception("listener failed")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, if anything: SQLite has already rolled back a transaction that
    failed on a full disk, and a second ROLLBACK would replace that error with its own."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _CallRequest:
    """A function to run on the writer thread between batches."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()
