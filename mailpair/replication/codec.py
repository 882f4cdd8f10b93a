"""The replication channel as a sans-I/O codec: bytes in, messages out; messages in, bytes out.

No socket and no asyncio here (the h11 shape). The shipper and the receiver read bytes from their
connection, feed them to a `Channel`, and write what it hands back (link.py does that for them).
Everything that decides whether a received byte is believed lives in this file, so it is tested
and fuzzed with lists of bytes.

Frame layout (little endian):

    length u32 | crc32c(body) u32 | crc32c(the 8 bytes before) u32 | body [| tag, 16 bytes]

The body is a msgpack map with the message's type under "t". The header's own checksum catches a
damaged length at once (instead of waiting for bytes that never come); the body's catches damage
in transit before anything in it is believed (records also carry their own checksum, checked
again by inspection). Once both ends have authenticated, every frame ends in a 16-byte
HMAC-SHA256 tag under a per-connection key for its direction and that direction's frame counter,
so someone on the path can neither alter records (and fix up the CRCs), nor replay, drop or
reorder frames without the receiver noticing.

Handshake, a mutual challenge with the shared cluster secret before anything else is said:

    passive -> active   hello     {v, node, nonce_p}
    active  -> passive  challenge {node, nonce_a}
    passive -> active   auth      {mac = HMAC(secret, "passive" | nonce_a | nonce_p)}
    active  -> passive  welcome   {mac = HMAC(secret, "active" | nonce_p | nonce_a)}

Each side proves it knows the secret over a nonce the other chose, so a recorded exchange cannot
be replayed and neither side talks to an impostor; the secret itself never crosses the wire. Both
sides then derive one key per direction from the secret and both nonces. The passive proves
itself first, so the active (which holds the data) is the one that refuses and logs a node with
the wrong secret; the passive then checks the active in turn.

Rules this module keeps:
- A frame is believed only whole and in this order: header checksum, length within the limit of
  the channel's state, body checksum, tag, decoding. Anything else raises ProtocolError.
- Before authentication a frame is at most `HANDSHAKE_MAX_FRAME` bytes, and the length is checked
  before any byte of the body is asked for: an unauthenticated peer cannot make this end hold
  more than that (issue 17). After it, at most `MAX_FRAME`, derived from the log's segment size.
- A channel that raised once is failed: it yields no message ever again, whatever it is fed
  (it may still send, once authenticated: an acknowledgement of what came before the damage).
- Frames are tagged in the order they are encoded: write them in that order.
- Every state and what it expects next is in `_EXPECTS`; the handshake steps are `_STEPS`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import crc32c
import msgpack

from mailpair.store.log import DEFAULT_SEGMENT_SIZE
from mailpair.store.records import pack

HEADER = struct.Struct("<III")  # length, body crc, crc of the two before
_HEADER_START = struct.Struct("<II")
_CRC = struct.Struct("<I")
_COUNTER = struct.Struct("<Q")
TAG_SIZE = 16
NONCE_SIZE = 32
# A batch of records; a single record fills at most one segment (a 25 MiB message and its
# analysis fit the default 32 MiB), and a batch adds records only while it stays under
# MAX_BATCH_BYTES, so every batch the shipper makes is a frame the receiver takes.
MAX_FRAME = 3 * DEFAULT_SEGMENT_SIZE
FRAME_MARGIN = 1024 * 1024  # what a batch frame holds besides its records (its fields, msgpack)
MAX_BATCH_BYTES = MAX_FRAME - FRAME_MARGIN
# Before authentication: a hello, challenge, proof or refusal is a few hundred bytes. Anyone can
# connect, so nothing larger is read from a peer that has not proved it knows the secret.
HANDSHAKE_MAX_FRAME = 4 * 1024
JOIN_BELOW = 64 * 1024  # a frame smaller than this goes out as one piece
# 2: frame headers carry their own checksum. Frames of versions 1 and 2 differ, so a node of one
# cannot read even the hello of the other (it reports damaged frames): upgrade both nodes together.
VERSION = 2


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class PeerError(Exception):
    """The peer answered with an error message ({"t": "error", "code", "msg", "lsn"})."""

    def __init__(self, code: str, message: str, lsn: int | None = None):
        super().__init__(message)
        self.code = code
        self.lsn = lsn


class AuthFailed(Exception):
    """The handshake failed; on the active, the refusal to send the peer is in data_to_send()."""


def error(code: str, message: str, lsn: int | None = None) -> dict[str, Any]:
    return {"t": "error", "code": code, "msg": message, "lsn": lsn}


def expect(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    if msg["t"] != kind:
        raise ProtocolError(f"expected a {kind} message, got {msg['t']}")
    return msg


# ---------------------------------------------------------------------- frames


class Tagger:
    """One direction of an authenticated connection: its key and the next frame's number."""

    __slots__ = ("key", "counter")

    def __init__(self, key: bytes):
        self.key = key
        self.counter = 0

    def tag(self, body: bytes) -> bytes:
        mac = hmac.new(self.key, _COUNTER.pack(self.counter), hashlib.sha256)
        mac.update(body)  # not counter + body: a copy of a large batch costs more than its hash
        self.counter += 1
        return mac.digest()[:TAG_SIZE]


def frame_header(body: bytes) -> bytes:
    start = _HEADER_START.pack(len(body), crc32c.crc32c(body))
    return start + _CRC.pack(crc32c.crc32c(start))


def encode_parts(msg: dict[str, Any], tagger: Tagger | None = None) -> list[bytes]:
    """A frame as the pieces to write one after the other: one piece for a small frame, three for
    a batch of records, because joining a header to a body of 100+ KiB costs more than packing
    and checksumming it."""
    body = pack(msg)  # a reused Packer: packb's fresh one regrows its buffer for every batch
    parts = [frame_header(body), body]
    if tagger is not None:
        parts.append(tagger.tag(body))
    return parts if len(body) > JOIN_BELOW else [b"".join(parts)]


def encode(msg: dict[str, Any], tagger: Tagger | None = None) -> bytes:
    return b"".join(encode_parts(msg, tagger))


class _Part(enum.Enum):
    HEADER = "header"
    BODY = "body"
    TAG = "tag"


class FrameDecoder:
    """Bytes in, checked frame bodies out. Reads a header, then its body, then (when a tagger is
    set) its tag; `bytes_needed` says how many bytes complete the part being read, so a reader
    that asks for exactly that never buffers beyond the current frame."""

    def __init__(self, max_frame: int):
        self.max_frame = max_frame
        self.tagger: Tagger | None = None
        self._buf: bytes | bytearray = b""
        self._part = _Part.HEADER
        self._length = 0
        self._crc = 0
        self._body = b""

    def bytes_needed(self) -> int:
        want = {_Part.HEADER: HEADER.size, _Part.BODY: self._length, _Part.TAG: TAG_SIZE}[self._part]
        return max(1, want - len(self._buf))

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if not self._buf:
            # kept as it came: a reader that asks for exactly a body hands over the body itself
            self._buf = bytes(data)
            return
        if not isinstance(self._buf, bytearray):
            self._buf = bytearray(self._buf)
        self._buf += data

    def _take(self, n: int) -> bytes | None:
        buf = self._buf
        if len(buf) < n:
            return None
        if len(buf) == n:
            self._buf = b""
            return bytes(buf)  # no copy when it is bytes already
        out = bytes(buf[:n])
        if isinstance(buf, bytearray):
            del buf[:n]
        else:
            self._buf = bytearray(buf[n:])
        return out

    def next_body(self) -> bytes | None:
        """The next whole, checked body, or None until more bytes come. Raises ProtocolError."""
        if self._part is _Part.HEADER:
            head = self._take(HEADER.size)
            if head is None:
                return None
            length, crc, head_crc = HEADER.unpack(head)
            if crc32c.crc32c(head[: _HEADER_START.size]) != head_crc:
                raise ProtocolError("frame header failed its checksum (damaged in transit)")
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes is over the limit of {self.max_frame}")
            self._length, self._crc, self._part = length, crc, _Part.BODY
        if self._part is _Part.BODY:
            body = self._take(self._length)
            if body is None:
                return None
            if crc32c.crc32c(body) != self._crc:
                raise ProtocolError("frame failed its checksum (damaged in transit)")
            self._body, self._part = body, _Part.TAG
        if self.tagger is not None:
            tag = self._take(TAG_SIZE)
            if tag is None:
                return None
            if not hmac.compare_digest(self.tagger.tag(self._body), tag):
                raise ProtocolError("frame failed its authentication tag (altered, replayed or out of order)")
        body, self._body, self._part = self._body, b"", _Part.HEADER
        return body


def decode_body(body: bytes) -> dict[str, Any]:
    """A checked body as a message; an error message from the peer raises PeerError."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolError(f"frame does not decode: {e}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("frame is not a message")
    if msg["t"] == "error":
        lsn = msg.get("lsn")
        raise PeerError(str(msg.get("code")), str(msg.get("msg")), lsn if isinstance(lsn, int) else None)
    return msg


# ---------------------------------------------------------------------- the channel


class Role(enum.Enum):
    ACTIVE = "active"
    PASSIVE = "passive"


class State(enum.Enum):
    WAIT_HELLO = "wait_hello"  # active: nothing received yet
    SENT_HELLO = "sent_hello"  # passive: waits for the challenge
    SENT_CHALLENGE = "sent_challenge"  # active: waits for the passive's proof
    SENT_AUTH = "sent_auth"  # passive: waits for the active's proof
    OPEN = "open"  # authenticated: tagged messages both ways
    FAILED = "failed"  # raised once; never yields a message again


# What each state takes next; anything else is a protocol error.
_EXPECTS = {
    State.WAIT_HELLO: "hello",
    State.SENT_HELLO: "challenge",
    State.SENT_CHALLENGE: "auth",
    State.SENT_AUTH: "welcome",
}


@dataclass(frozen=True)
class Authenticated:
    """The handshake succeeded; from now on messages are tagged. `peer` is its node name."""

    peer: str


@dataclass(frozen=True)
class Message:
    body: dict[str, Any]


Event = Authenticated | Message


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + b"|" + first + b"|" + second, hashlib.sha256).digest()


def _nonce(msg: dict[str, Any]) -> bytes:
    nonce = msg.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ProtocolError(f"{msg['t']} without a valid nonce")
    return nonce


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


class Channel:
    """One end of a replication connection: the handshake, then tagged messages both ways.

    receive_data(bytes) feeds it; next_event() returns the next Authenticated or Message event,
    or None until more bytes come, and raises ProtocolError, PeerError or AuthFailed; send(msg)
    returns the bytes to write; data_to_send() returns what the handshake wants written (call it
    after every event, and after AuthFailed: it holds the refusal the peer should read)."""

    def __init__(
        self,
        role: Role,
        secret: bytes,
        node: str,
        *,
        nonce: bytes | None = None,
        max_frame: int = MAX_FRAME,
        max_handshake_frame: int = HANDSHAKE_MAX_FRAME,
    ):
        self.role = role
        self.node = node
        self.peer: str | None = None
        self.max_frame = max_frame
        self._secret = secret
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_SIZE)
        self._peer_nonce = b""
        self._frames = FrameDecoder(max_handshake_frame)
        self._send_tagger: Tagger | None = None
        self._outbox: list[bytes] = []
        self._failure: BaseException | None = None
        if role is Role.PASSIVE:
            self._outbox.append(encode({"t": "hello", "v": VERSION, "node": node, "nonce": self._nonce}))
            self.state = State.SENT_HELLO
        else:
            self.state = State.WAIT_HELLO

    # ------------------------------------------------------------------ bytes in
    def receive_data(self, data: bytes) -> None:
        self._frames.feed(data)

    def bytes_needed(self) -> int:
        """At least this many more bytes are needed before the next event (always >= 1)."""
        return self._frames.bytes_needed()

    def next_event(self) -> Event | None:
        if self._failure is not None:
            raise ProtocolError(f"the channel failed before and takes nothing more ({self._failure})")
        try:
            while True:
                body = self._frames.next_body()
                if body is None:
                    return None
                try:
                    msg = decode_body(body)
                except PeerError as e:
                    if self.state is State.OPEN or self.role is Role.ACTIVE:
                        raise
                    raise AuthFailed(f"the active refused this node: {e}") from None
                if self.state is State.OPEN:
                    return Message(msg)
                event = self._step(expect(msg, _EXPECTS[self.state]))
                if event is not None:
                    return event
        except BaseException as e:
            self._failure = e
            self.state = State.FAILED
            raise

    # ------------------------------------------------------------------ bytes out
    def send(self, msg: dict[str, Any]) -> list[bytes]:
        """A message as the pieces to write, in order, before encoding the next one."""
        # After a receive error the send direction still works: the receiver acknowledges what
        # it stored before the damage, and its tag counter is untouched by what came in.
        if self._send_tagger is None and msg.get("t") != "error":
            raise RuntimeError(f"a {msg.get('t')} message cannot be sent before the handshake ends ({self.state.value})")
        return encode_parts(msg, self._send_tagger)

    def data_to_send(self) -> bytes:
        out, self._outbox = b"".join(self._outbox), []
        return out

    # ------------------------------------------------------------------ the handshake
    def _step(self, msg: dict[str, Any]) -> Event | None:
        return _STEPS[self.state](self, msg)

    def _on_hello(self, hello: dict[str, Any]) -> None:
        self._peer_nonce = _nonce(hello)
        self.peer = str(hello.get("node"))
        if hello.get("v") != VERSION:
            why = f"node {self.peer!r} speaks replication protocol {hello.get('v')}, this node {VERSION}; upgrade both nodes"
            self._refuse("version", why)
        self._outbox.append(encode({"t": "challenge", "node": self.node, "nonce": self._nonce}))
        self.state = State.SENT_CHALLENGE

    def _on_challenge(self, challenge: dict[str, Any]) -> None:
        self._peer_nonce = _nonce(challenge)
        self.peer = str(challenge.get("node"))
        self._outbox.append(encode({"t": "auth", "mac": _mac(self._secret, b"passive", self._peer_nonce, self._nonce)}))
        self.state = State.SENT_AUTH

    def _on_auth(self, msg: dict[str, Any]) -> Event:
        nonce_a, nonce_p = self._nonce, self._peer_nonce
        if not hmac.compare_digest(_mac(self._secret, b"passive", nonce_a, nonce_p), _bytes(msg.get("mac"))):
            self._outbox.append(encode(error("auth", "authentication failed: wrong cluster secret")))
            raise AuthFailed(f"node {self.peer!r} failed authentication (wrong cluster secret)")
        self._outbox.append(encode({"t": "welcome", "mac": _mac(self._secret, b"active", nonce_p, nonce_a)}))
        return self._open(nonce_a, nonce_p)

    def _on_welcome(self, welcome: dict[str, Any]) -> Event:
        nonce_a, nonce_p = self._peer_nonce, self._nonce
        if not hmac.compare_digest(_mac(self._secret, b"active", nonce_p, nonce_a), _bytes(welcome.get("mac"))):
            raise AuthFailed(f"the peer claiming to be the active ({self.peer}) does not know the cluster secret")
        return self._open(nonce_a, nonce_p)

    def _refuse(self, code: str, why: str) -> None:
        self._outbox.append(encode(error(code, why)))
        raise AuthFailed(why)

    def _open(self, nonce_a: bytes, nonce_p: bytes) -> Event:
        to_active = _mac(self._secret, b"key p->a", nonce_a, nonce_p)
        to_passive = _mac(self._secret, b"key a->p", nonce_a, nonce_p)
        send_key, receive_key = (to_passive, to_active) if self.role is Role.ACTIVE else (to_active, to_passive)
        self._send_tagger = Tagger(send_key)
        self._frames.tagger = Tagger(receive_key)
        self._frames.max_frame = self.max_frame
        self.state = State.OPEN
        return Authenticated(str(self.peer))


_STEPS = {
    State.WAIT_HELLO: Channel._on_hello,
    State.SENT_HELLO: Channel._on_challenge,
    State.SENT_CHALLENGE: Channel._on_auth,
    State.SENT_AUTH: Channel._on_welcome,
}
