"""Command framing: bytes in, whole commands (lines and literals) out. Sans-I/O, like h11.

The server feeds whatever it received; `next_event()` says what to do next:
- `Command(segments)`: a complete command; segments alternate line text and literal bytes
  (line0, lit0, line1, ..., lineN); lines keep their `{n}` marker, without CRLF.
- `Continue()`: the client waits for "+" before sending a synchronising literal.
- `Refused(tag, reason, code, close)`: the command was dropped (too long, literal over the limit);
  the literal was never read (or, for a non-synchronising one, skipped without being kept);
  `close`: the connection must end (a client not logged in sent a literal it may not send).
- `Line(bytes)`: in raw line mode (AUTHENTICATE answers, IDLE's DONE), one line.
- `None`: more bytes are needed.
Nothing here raises on any input.

Before login (`authenticated` False; issue 17: `APPEND INBOX {20000000}` got "+ Ready" and the
server read 20 MB before saying "log in first"), a literal is accepted only in a command allowed
then (`preauth_commands`) and up to `preauth_literal` bytes, and it counts towards the command's
size; anything else is refused before a continuation is sent, and a non-synchronising literal
(which the client sends without waiting) ends the connection rather than being read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}$")
_TAG = re.compile(rb"^([!#$&'+-Z^-z|}~\x5b\x5d]+) ")


@dataclass(slots=True)
class Command:
    segments: list[bytes]


@dataclass(slots=True)
class Continue:
    pass


@dataclass(slots=True)
class Refused:
    tag: bytes | None
    reason: str
    code: bytes | None = None
    close: bool = False


@dataclass(slots=True)
class Line:
    line: bytes


Event = Command | Continue | Refused | Line | None


def tag_of(line: bytes) -> bytes | None:
    m = _TAG.match(line)
    if m and b"+" not in m.group(1):
        return m.group(1)
    return None


class Framer:
    def __init__(
        self,
        max_command_bytes: int = 64 * 1024,
        max_literal_bytes: int = 64 * 1024 * 1024,
        preauth_literal_bytes: int | None = None,
        preauth_commands: frozenset[str] = frozenset(),
    ):
        self.max_command = max_command_bytes
        self.max_literal = max_literal_bytes
        # None: no pre-login rules (a framer on its own, as the framing tests use it)
        self.preauth_literal = preauth_literal_bytes
        self.preauth_commands = preauth_commands
        self.authenticated = preauth_literal_bytes is None
        self.buf = bytearray()
        self.line_mode = False  # raw lines (AUTHENTICATE, IDLE)
        self._segments: list[bytes] = []
        self._text_bytes = 0
        self._literal_left = 0
        self._lit = bytearray()
        self._discarding_literal = False
        self._skip_line = False  # discarding an over-long line up to its LF
        self._refusal: Refused | None = None  # set while skipping the rest of a refused command
        self._pending: list[Event] = []

    @property
    def mid_command(self) -> bool:
        """True while part of a command has arrived (for the command time-out)."""
        return bool(self._segments or self.buf or self._literal_left or self._refusal or self._skip_line)

    @property
    def in_literal(self) -> bool:
        """True while a literal's bytes are awaited (for the minimum data rate)."""
        return self._literal_left > 0

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_event(self) -> Event:
        if self._pending:
            return self._pending.pop(0)
        while True:
            if self._literal_left:
                if not self.buf:
                    return None
                take = min(self._literal_left, len(self.buf))
                chunk = bytes(self.buf[:take])
                del self.buf[:take]
                self._literal_left -= take
                if not self._discarding_literal:
                    self._lit += chunk
                    if not self._literal_left:
                        self._segments.append(bytes(self._lit))
                        self._lit = bytearray()
                continue
            if self._skip_line:
                i = self.buf.find(b"\n")
                if i < 0:
                    self.buf.clear()
                    return None
                del self.buf[: i + 1]
                self._skip_line = False
                ev, self._refusal = self._refusal, None
                return ev
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > self.max_command:
                    tag = tag_of(bytes(self.buf[:200])) if not self._segments else tag_of(self._segments[0])
                    self._refusal = self._refusal or Refused(tag, f"command line longer than {self.max_command} bytes")
                    self._reset_command()
                    self._skip_line = True
                    continue
                return None
            line = bytes(self.buf[:i])
            del self.buf[: i + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if self.line_mode and not self._segments and self._refusal is None:
                return Line(line)
            ev = self._on_line(line)
            if ev is not None:
                return ev

    def _reset_command(self) -> None:
        self._segments = []
        self._text_bytes = 0

    def _on_line(self, line: bytes) -> Event:
        m = _LITERAL_AT_END.search(line)
        if self._refusal is not None:
            # Skipping the rest of a refused command: only non-synchronising literals follow.
            if m and m.group(3):
                self._literal_left = int(m.group(2))
                self._discarding_literal = True
                return None
            ev, self._refusal = self._refusal, None
            return ev
        self._text_bytes += len(line)
        first = self._segments[0] if self._segments else line
        tag = tag_of(first)
        if self._text_bytes > self.max_command:
            refused = Refused(tag, f"command longer than {self.max_command} bytes")
            return self._refuse(refused, m)
        if not m:
            self._segments.append(line)
            cmd = Command(self._segments)
            self._reset_command()
            return cmd
        n = int(m.group(2))
        if not self.authenticated:
            return self._preauth_literal(line, m, n, tag, first)
        is_append = b" APPEND " in first[:64].upper() + b" "
        limit = self.max_literal if is_append else self.max_command - self._text_bytes
        if n > limit:
            if is_append:
                refused = Refused(tag, f"message of {n} bytes is over the limit of {limit} bytes", b"TOOBIG")
            else:
                refused = Refused(tag, f"literal of {n} bytes is over the limit of {limit} bytes")
            return self._refuse(refused, m)
        if not is_append:
            self._text_bytes += n
        return self._take_literal(line, m, n)

    def _take_literal(self, line: bytes, m: re.Match, n: int) -> Event | None:
        """Read the literal this line announces; a synchronizing one first gets its continuation."""
        self._segments.append(line)
        self._literal_left = n
        self._discarding_literal = False
        if n == 0:
            self._segments.append(b"")
        return None if m.group(3) else Continue()

    def _preauth_literal(self, line: bytes, m: re.Match, n: int, tag: bytes | None, first: bytes) -> Event:
        words = first.split(b" ", 2)
        name = words[1].decode("ascii", "replace").upper() if len(words) > 1 else ""
        limit = min(self.preauth_literal or 0, self.max_command - self._text_bytes)
        if name not in self.preauth_commands:
            refused = Refused(tag, f"{name[:20] or 'command'} not allowed now: log in first")
        elif n > limit:
            refused = Refused(tag, f"literal of {n} bytes is over the limit of {max(limit, 0)} bytes before login")
        else:
            self._text_bytes += n
            return self._take_literal(line, m, n)
        self._reset_command()
        if m.group(3):
            # A non-synchronising literal is on its way: end the connection instead of reading it.
            refused.close = True
        return refused

    def _refuse(self, refused: Refused, m: re.Match | None) -> Event:
        self._reset_command()
        if m and m.group(3):
            # The client sends a non-synchronising literal without waiting: skip it unread.
            self._refusal = refused
            self._literal_left = int(m.group(2))
            self._discarding_literal = True
            return None
        return refused
