"""The DATA reader: a message up to CRLF.CRLF, dot-unstuffed, within a size limit, and the checks
its content must pass before it is stored.

Rules this module keeps: what follows the terminator stays in the reader for the next command
(pipelining); an over-size message is read to its end and dropped so the session stays in step,
unless it never ends (then DataAbort: reply and hang up); checks run after dot-unstuffing.
The session reads DATA itself, rather than through aiosmtpd's line-by-line loop, so that it can
refuse bare LF, NUL bytes and over-long lines with an error per recipient, stop a message that
never ends, and read a normal message in a handful of buffer scans.
"""

from __future__ import annotations

import asyncio


def data_deadline(received: int, min_rate: int, grace: float) -> float:
    """Seconds after the start of DATA by which a client that has sent `received` bytes must
    have sent more: grace, plus the time those bytes buy at min_rate. Past it, DATA is too slow."""
    return grace + received / min_rate


class DataAbort(Exception):
    """The DATA transfer cannot go on: reply with str(exc) and close the connection."""


def content_problem(content: bytes, max_line: int) -> str | None:
    """Why a received message cannot be taken as it is, or None. Checked after dot-unstuffing."""
    if b"\x00" in content:
        return "550 5.6.0 Message contains NUL bytes"
    if content.count(b"\n") != content.count(b"\r\n"):
        return "550 5.6.0 Message contains a bare LF (every line must end with CRLF)"
    if len(content) > max_line and max(map(len, content.split(b"\r\n"))) > max_line:
        return f"550 5.6.0 Message has a line longer than {max_line} bytes"
    return None


def unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: remove the leading dot the client added to lines that start with one."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


async def read_data(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read DATA up to CRLF.CRLF and return it dot-unstuffed, leaving what follows in the reader;
    None when it is over `limit` bytes (the rest is read and dropped so the session stays in
    step). A message that never ends raises DataAbort; a client that leaves, ConnectionResetError."""
    # One readuntil() scans the whole buffer for LF.CRLF at C speed. StreamReader's limit is
    # lifted to the message limit for this, and restored for command lines. asyncio has no public
    # way to change a reader's limit after it is made (aiosmtpd makes ours sized for command
    # lines), so this sets its private _limit.
    saved_limit = reader._limit  # type: ignore[attr-defined]
    reader._limit = limit + 5  # type: ignore[attr-defined]
    buf = bytearray(b"\r\n")  # the data starts at a line start
    over = False
    total = 0
    try:
        while not buf.endswith(b"\r\n.\r\n"):
            # readuntil() cannot see a terminator that began in bytes already taken: when buf
            # ends with the start of one ("\n", "\n.", "\n.\r"), take just the bytes that
            # complete or refute it.
            k = 3 if buf.endswith(b"\n.\r") else 2 if buf.endswith(b"\n.") else 1 if buf.endswith(b"\n") else 0
            try:
                piece = await reader.readexactly(4 - k) if k else await reader.readuntil(b"\n.\r\n")
            except asyncio.LimitOverrunError as e:
                piece = await reader.read(e.consumed)
                over = True
            except asyncio.IncompleteReadError as e:
                raise ConnectionResetError("client closed the connection during DATA") from e
            total += len(piece)
            buf += piece
            if over or len(buf) > limit + 5:
                over = True
                del buf[:-5]  # keep only what the terminator check needs
                if total > 2 * limit + 1024 * 1024:
                    # A message that never ends: stop reading and hang up.
                    raise DataAbort(f"552 5.3.4 Message too big (limit {limit} bytes), closing connection")
    finally:
        reader._limit = saved_limit  # type: ignore[attr-defined]
    if over:
        return None
    return unstuff(bytes(memoryview(buf)[2:-3]))  # one copy of the message, not a bytearray slice and then bytes of it
