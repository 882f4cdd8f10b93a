"""A fault-injecting TCP proxy for the replication channel, run on its own thread and loop.

Between the passive and the active it can flip bits in the bytes it forwards, cut every open
connection, and stall (hold the bytes back) for a while. Real sockets on loopback throughout."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port: int, seed: int = 7):
        self.upstream_port = upstream_port
        self.flip_every = 0  # flip one bit in about one of this many forwarded chunks (0: never)
        self.stalled_until = 0.0
        self.flips = 0
        self.cuts = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while time.monotonic() < self.stalled_until:
                    await asyncio.sleep(0.05)
                if self.flip_every and self._rng.randrange(self.flip_every) == 0:
                    buf = bytearray(data)
                    i = self._rng.randrange(len(buf))
                    buf[i] ^= 1 << self._rng.randrange(8)
                    data = bytes(buf)
                    self.flips += 1
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def cut(self) -> None:
        """Drop every open connection at once."""

        def do():
            for w in list(self._writers):
                w.transport.abort()
            self.cuts += 1

        self._loop.call_soon_threadsafe(do)

    def stall(self, seconds: float) -> None:
        self.stalled_until = time.monotonic() + seconds

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
