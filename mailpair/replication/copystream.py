"""Serving one copy on the active: a stream of log records from the LSN it asks for, or a seed.

A stream starts in file mode (records read back from segment files, checked as they are read)
and switches to block mode (records handed over by the store's log listener as they are written)
once it reaches the head. A live buffer that overflows (the passive is slower than the writer)
sends the stream back to file mode. The passive's acknowledgements move its pin and release
synchronous callers; an acknowledgement beyond what this stream sent ends it.

If the active's own log is damaged where the passive needs it, the passive is told, with the LSN
(it marks its copy Failed); the active itself keeps serving.

Rules this module keeps:
- A batch never grows past what one frame carries (policy.batch_takes).
- The last LSN sent is kept per stream (Sent), not per copy: a reconnect's stream may overlap
  the end of the old one, and a shared value could refuse a real acknowledgement or pass a false one.
- A pin is moved forward every few seconds, never per record (a pin is an fsync'd file), and in
  the background: a pin waits its turn on the writer thread, acknowledgements must not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from mailpair.replication import codec, policy, seed
from mailpair.replication.copies import CopyView, HeadTracker
from mailpair.replication.link import Link
from mailpair.replication.settings import ReplicationSettings
from mailpair.replication.syncgate import SyncGate
from mailpair.store import Database
from mailpair.store.log import LogCorruption, LogError, Record

log = logging.getLogger("mailpair.replication")

REQUEST_TIMEOUT = 10.0  # for the small answers of a request (ok, errors)
WRITE_TIMEOUT = 30.0
SEED_CONFIRM_TIMEOUT = 300.0  # the passive checks the whole file before it says it has it


async def pin(db: Database, view: CopyView, lsn: int, every_s: float, force: bool = False) -> None:
    """Keep the segments this copy still needs (DESIGN rule 4); moved forward every every_s
    seconds, never per record (a pin is an fsync'd file)."""
    now = time.monotonic()
    if not force and (lsn == view._pinned or now - view._pinned_at < every_s):
        return
    view._pinned, view._pinned_at = lsn, now
    name = f"copy:{view.node}"
    await asyncio.to_thread(db.call_on_writer, lambda: db.set_pin(name, lsn))


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


class CopyStream:
    """One stream of one database's records to one passive, from the LSN it asked for."""

    def __init__(
        self,
        db: Database,
        view: CopyView,
        link: Link,
        settings: ReplicationSettings,
        tracker: HeadTracker,
        gate: SyncGate | None,
        pin_tasks: set[asyncio.Task],
    ):
        self.db = db
        self.view = view
        self.link = link
        self.settings = settings
        self.tracker = tracker
        self.gate = gate
        self._pin_tasks = pin_tasks  # the shipper waits for these on close, never cancels them
        self.sent = Sent(0)

    async def _pin(self, lsn: int, force: bool = False) -> None:
        await pin(self.db, self.view, lsn, self.settings.pin_every_s, force)

    async def refuse(self, msg: dict[str, Any]) -> bool:
        """Answer an open request the active cannot serve with the reason; True when it did."""
        db, link = self.db, self.link
        start = msg.get("from")
        if not isinstance(start, int) or start < 1:
            raise codec.ProtocolError("open without a valid LSN")
        if msg.get("id") != db.db_id:
            await link.send(codec.error("db_id", f"the copy of {db.name} belongs to another database; reseed it"))
            return True
        if start > db.log.last_lsn + 1:
            why = f"the copy has records up to LSN {start - 1}; the active's log ends at {db.log.last_lsn}"
            await link.send(codec.error("ahead", why))
            return True
        copy_epoch = msg.get("epoch") or 0
        if copy_epoch > db.epoch:
            why = f"the copy is in epoch {copy_epoch}, newer than the active's epoch {db.epoch}"
            await link.send(codec.error("epoch", why))
            return True
        return await self._gone(start)

    async def run(self, start: int) -> None:
        """Pin, say ok, then send and take acknowledgements until one side ends the stream."""
        db, view = self.db, self.view
        await self._pin(start, force=True)
        if await self._gone(start):  # let go of while it was away, just before this pin
            return
        live = LiveFeed(db, asyncio.get_running_loop(), self.settings.live_buffer_records)
        await self.link.send({"t": "ok", "head": db.log.last_lsn, "epoch": db.epoch}, REQUEST_TIMEOUT)
        view.streams += 1
        view.acked, view.mode, view.reason = start - 1, "file", None
        self.sent = Sent(start - 1)
        if self.gate:
            self.gate.set_connected(1)
        acks = asyncio.create_task(self._read_acks())
        sender = asyncio.create_task(self._send_loop(live, start))
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
            if self.gate:
                self.gate.set_connected(-1)

    async def _gone(self, start: int) -> bool:
        """Tell the passive to reseed when the log it asks for is no longer kept."""
        db = self.db
        if start >= db.log.first_lsn:
            return False
        msg = f"LSN {start} is no longer in the active's log (it starts at {db.log.first_lsn})"
        await self.link.send(codec.error("need_seed", msg))
        return True

    async def _read_acks(self) -> None:
        db, view, sent, gate = self.db, self.view, self.sent, self.gate
        while True:
            msg = await self.link.receive(self.settings.stall_timeout_s + 5)
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
                t = self.tracker.written_at(lsn)
                if t is not None:
                    view.lag_samples.append((time.monotonic() - t) * 1000)
                view.acked = lsn
                if gate:
                    gate.on_ack(lsn, db.log.last_lsn)
            if view.pin_task is None or view.pin_task.done():
                # in the background: a pin waits its turn on the writer thread, acks must not
                view.pin_task = asyncio.create_task(self._pin(view.acked + 1))
                self._pin_tasks.add(view.pin_task)
                view.pin_task.add_done_callback(self._pin_tasks.discard)

    async def _send_loop(self, live: LiveFeed, start: int) -> None:
        db, view = self.db, self.view
        nxt = start
        s = self.settings
        while True:
            while live.items and live.items[0][0] < nxt:
                live.pop()  # the passive has these already (read from files)
            if live.items and live.items[0][0] == nxt:
                raws: list[bytes] = []
                size = 0
                while live.items and policy.batch_takes(len(raws), size, len(live.items[0][1]), s.batch_records, s.batch_bytes):
                    raws.append(live.pop()[1])
                    size += len(raws[-1])
                view.mode = "block"
                await self._send_batch(nxt, raws, "block")
                nxt += len(raws)
                continue
            head = db.log.last_lsn
            coming = nxt >= live.start_lsn and nxt > live.dropped_upto  # the feed will hand it over
            if nxt <= head and (live.items or not coming):
                # file mode: read back from segments up to the head, or up to what live holds
                upto = live.items[0][0] - 1 if live.items else head
                view.mode = "file"
                nxt = await self._send_from_files(nxt, upto)
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
                        await self.link.send(self._heartbeat(), WRITE_TIMEOUT)

    async def _send_from_files(self, nxt: int, upto: int) -> int:
        db, s = self.db, self.settings
        try:
            gen = db.log.read_from(nxt, upto)
        except LogError as e:
            raise await self._log_failed(nxt, e) from None

        deferred: list[LogError] = []
        held: list[bytes] = []  # a record read that did not fit the last batch: the next one's first

        def chunk() -> list[bytes]:
            # Records before a damaged one still go out; the damage is reported right after them.
            if deferred:
                raise deferred[0]
            out, size = held[:], sum(len(r) for r in held)
            held.clear()
            try:
                for rec in gen:
                    raw = rec.encode()
                    if not policy.batch_takes(len(out), size, len(raw), s.batch_records, s.batch_bytes):
                        held.append(raw)
                        break
                    out.append(raw)
                    size += len(raw)
            except LogError as e:
                if not out:
                    raise
                deferred.append(e)
            return out

        while nxt <= upto:
            try:
                raws = await asyncio.to_thread(chunk)
            except LogError as e:
                raise await self._log_failed(nxt, e) from None
            if not raws:
                break
            await self._send_batch(nxt, raws, "file")
            nxt += len(raws)
        return nxt

    async def _log_failed(self, nxt: int, e: LogError) -> Exception:
        db = self.db
        lsn = e.lsn if isinstance(e, LogCorruption) and e.lsn else nxt
        code = "corrupt" if isinstance(e, LogCorruption) else "need_seed"
        log.error("replication: cannot ship database %s from LSN %d: %s", db.name, lsn, e)
        await self.link.send(codec.error(code, f"the active's log of {db.name} is unreadable at LSN {lsn}: {e}", lsn))
        return codec.ProtocolError(f"stream of {db.name} ended: active log unreadable at LSN {lsn}")

    def _heartbeat(self) -> dict[str, Any]:
        db, view, tracker = self.db, self.view, self.tracker
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

    async def _send_batch(self, first: int, raws: list[bytes], mode: str) -> None:
        msg = self._heartbeat()
        msg.update({"t": "recs", "id": self.db.db_id, "first": first, "raws": raws, "mode": mode})
        self.sent.lsn = first + len(raws) - 1  # before the send: the ack may come back before drain returns
        await self.link.send(msg, WRITE_TIMEOUT)


async def serve_seed(db: Database, view: CopyView, node: str, link: Link, settings: ReplicationSettings) -> None:
    """Send a consistent snapshot of db, pinning the log from its LSN on, and wait until the
    passive says it has checked it (or hangs up)."""
    # Keep every segment from now on until the copy catches up from the snapshot's LSN.
    await pin(db, view, db.log.first_lsn, settings.pin_every_s, force=True)
    path, lsn, epoch = await asyncio.to_thread(seed.snapshot, db.path)
    try:
        await pin(db, view, lsn + 1, settings.pin_every_s, force=True)
        size = path.stat().st_size
        log.info("replication: seeding %s on %s from a snapshot at LSN %d (%d bytes)", db.name, node, lsn, size)
        await link.send({"t": "seed_begin", "lsn": lsn, "epoch": epoch, "id": db.db_id, "size": size}, WRITE_TIMEOUT)
        chunk_size = policy.batch_room(settings.seed_chunk)  # a chunk is one frame too
        with open(path, "rb") as f:
            while True:
                chunk = await asyncio.to_thread(f.read, chunk_size)
                if not chunk:
                    break
                await link.send({"t": "seed_chunk", "data": chunk}, WRITE_TIMEOUT)
        await link.send({"t": "seed_end"}, WRITE_TIMEOUT)
        await link.receive(SEED_CONFIRM_TIMEOUT)
    finally:
        path.unlink(missing_ok=True)
