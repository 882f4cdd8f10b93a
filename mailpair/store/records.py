"""Record types and payload encoding.

Every mailbox operation becomes exactly one record whose payload carries every value the active
decided (mailbox ids, UIDs, UIDVALIDITY, internal dates, resulting flags). Modseqs are the
record's own LSN, so they need no field. Payloads are msgpack maps with short keys; bytes stay
bytes, text stays text.
"""

from __future__ import annotations

import enum
import threading
from typing import Any

import msgpack


class RecordType(enum.IntEnum):
    ACCOUNT_ADD = 1
    ACCOUNT_DEL = 2
    ACCOUNT_PASSWD = 3
    QUOTA_SET = 4
    MAILBOX_CREATE = 10
    MAILBOX_RENAME = 11
    MAILBOX_DELETE = 12
    SUBSCRIBE = 13
    DELIVER = 20
    APPEND = 21
    FLAGS = 22
    COPY = 23
    MOVE = 24
    EXPUNGE = 25
    EPOCH = 30  # written by a node when it becomes active in a new epoch; changes no mailbox


_packers = threading.local()  # a Packer per thread: packb makes a new one every call


def pack(payload: Any) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(payload)


def unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
