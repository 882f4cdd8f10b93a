"""Preparing a message for the store: the size check and the one-time analysis (ENVELOPE and
BODYSTRUCTURE) whose result travels in the record, so no copy has to parse the message again.

Analysis is pure Python and CPU-bound. On the event loop it holds the GIL that the database's
writer thread needs between its SQLite calls, and a delivery spends more CPU there than anywhere
else. So a node with cores to spare runs it in helper processes (`Preparer(workers=N)`), each
on a socket pair of its own: the event loop only copies bytes, and the analysis runs on another
core. A helper that dies
or stalls is replaced; the messages it held are analysed in-process meanwhile, so no delivery
fails for it. `Preparer(0)` (the default, for tools and tests) analyses in-process.

Wire format, both ways little endian: a request is id u64 | length u32 | message bytes; an answer
is id u64 | envelope length u32 | bodystructure length u32 | both, packed as records pack them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from mailpair.mime import analyse
from mailpair.store.errors import TooLarge
from mailpair.store.records import pack

logger = logging.getLogger("mailpair.store")

DEFAULT_MAX_MESSAGE = 25 * 1024 * 1024
_REQUEST = struct.Struct("<QI")
_ANSWER = struct.Struct("<QII")
BIG = 64 * 1024  # in-process, messages over this size are analysed on a thread, off the event loop
BURST_S = 0.0002  # a message this soon after the last one is part of a burst: it goes to a helper


def prepare_message(raw: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE) -> dict[str, Any]:
    """Check the size and analyse the message here and now (blocking)."""
    _check_size(raw, max_bytes)
    return _prepared(raw)


def _analysed(raw: bytes) -> tuple[bytes, bytes]:
    """ENVELOPE and BODYSTRUCTURE, packed as the record carries them (here or in a helper)."""
    env, bs = analyse(raw)
    return pack(env), pack(bs)


def _prepared(raw: bytes) -> dict[str, Any]:
    env, bs = _analysed(raw)
    return {"raw": raw, "env": env, "bs": bs}


def _check_size(raw: bytes, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise TooLarge(f"message of {len(raw)} bytes is over the limit of {max_bytes}")


def default_workers() -> int:
    """One helper per core beyond the two that the event loop and the database writers keep busy
    (up to four). On two cores none: measured there, a helper's round trip costs deliveries more
    than the analysis it takes off the event loop (bench/RESULTS.md)."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


class HelperGone(Exception):
    """The helper holding a message died or was stopped before it answered."""


class _Helper(asyncio.Protocol):
    """The node's end of one helper process."""

    def __init__(self, preparer: Preparer):
        self.preparer = preparer
        self.transport: asyncio.Transport | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[int, tuple[asyncio.Future, float]] = {}  # oldest first
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= _ANSWER.size:
            rid, n_env, n_bs = _ANSWER.unpack_from(buf, pos)
            start = pos + _ANSWER.size
            end = start + n_env + n_bs
            if end > len(buf):
                break
            entry = self.pending.pop(rid, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result((bytes(buf[start : start + n_env]), bytes(buf[start + n_env : end])))
            pos = end
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(HelperGone())
        self.pending.clear()
        self.preparer._lost(self)


class Preparer:
    def __init__(self, workers: int = 0, stall_s: float = 30.0):
        self.workers = workers
        self.stall_s = stall_s
        self.helpers: list[_Helper] = []
        self.analysed = {"helper": 0, "inline": 0}
        self._ids = itertools.count(1)
        self._in_helpers = 0  # messages in helpers now
        self._last_call = 0.0
        self._closing = False
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> Preparer:
        for _ in range(self.workers):
            await self._spawn()
        if self.workers:
            self._keep(self._watch())
        return self

    async def prepare(self, raw: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE) -> dict[str, Any]:
        """Check the size and analyse the message, in a helper when one is running."""
        _check_size(raw, max_bytes)
        helper = None
        if self.helpers:
            now = time.monotonic()
            if self._in_helpers or now - self._last_call < BURST_S or len(raw) > BIG:
                helper = min((h for h in self.helpers if h.transport is not None), key=lambda h: len(h.pending), default=None)
            self._last_call = now
        # A message that arrives alone is analysed at once: the round trip to a helper would cost
        # more than the analysis, and nothing else is waiting for the event loop or the GIL.
        if helper is not None:
            rid = next(self._ids)
            fut = asyncio.get_running_loop().create_future()
            helper.pending[rid] = (fut, time.monotonic())
            helper.transport.write(_REQUEST.pack(rid, len(raw)) + raw)
            self._in_helpers += 1
            try:
                env, bs = await fut
            except HelperGone:
                pass  # what a lost helper held: analysed here instead, off the event loop
            else:
                self.analysed["helper"] += 1
                return {"raw": raw, "env": env, "bs": bs}
            finally:
                self._in_helpers -= 1
        self.analysed["inline"] += 1
        if helper is not None or len(raw) > BIG:
            return await asyncio.to_thread(_prepared, raw)  # off the event loop
        return _prepared(raw)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for helper in list(self.helpers):
            if helper.transport is not None:
                helper.transport.close()
            if helper.proc is not None:
                try:
                    async with asyncio.timeout(2):
                        await helper.proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        helper.proc.kill()
                    await helper.proc.wait()
        self.helpers.clear()

    # ------------------------------------------------------------------ helpers' lives
    async def _spawn(self) -> None:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mailpair.store.prepare_helper",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        _, helper = await asyncio.get_running_loop().create_unix_connection(lambda: _Helper(self), sock=parent)
        helper.proc = proc
        self.helpers.append(helper)

    def _lost(self, helper: _Helper) -> None:
        if helper in self.helpers:
            self.helpers.remove(helper)
        if helper.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                helper.proc.kill()
        if not self._closing:
            logger.warning("message analysis helper stopped; starting another")
            self._keep(self._respawn(helper))

    async def _respawn(self, helper: _Helper) -> None:
        if helper.proc is not None:
            await helper.proc.wait()
        await asyncio.sleep(0.5)
        if not self._closing:
            try:
                await self._spawn()
            except Exception:
                logger.exception("cannot start a message analysis helper; analysing in-process")

    async def _watch(self) -> None:
        """A helper that sits on one message longer than stall_s is stopped: its messages are
        analysed in-process and a fresh helper takes its place."""
        while True:
            await asyncio.sleep(min(1.0, self.stall_s / 2))
            now = time.monotonic()
            for helper in list(self.helpers):
                oldest = next(iter(helper.pending.values()), None)
                if oldest is not None and now - oldest[1] > self.stall_s and helper.transport is not None:
                    logger.warning("message analysis helper stalled for %.0f s; replacing it", now - oldest[1])
                    helper.transport.abort()

    def _keep(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def serve(fd: int) -> None:
    """The helper process: answer requests on the socket until the node closes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when helpers stop
    sock = socket.socket(fileno=fd)
    buf = bytearray()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= _REQUEST.size:
            rid, n = _REQUEST.unpack_from(buf, pos)
            start = pos + _REQUEST.size
            if start + n > len(buf):
                break
            e, b = _analysed(bytes(buf[start : start + n]))
            out.append(_ANSWER.pack(rid, len(e), len(b)) + e + b)
            pos = start + n
        del buf[:pos]
        if out:
            sock.sendall(b"".join(out))
