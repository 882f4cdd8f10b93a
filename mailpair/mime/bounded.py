"""MIME analysis with limits, for messages built to exhaust it: at most MAX_PARTS parts in all
and MAX_DEPTH levels of nesting (Dovecot's defaults, mime.max_parts / mime.max_nesting); past
either, what is left of the enclosing multipart is one opaque part (application/octet-stream),
so a 25 MiB message of tiny parts costs bounded memory and a bounded BODYSTRUCTURE record.

The email package builds a Message object per part before anything can be counted, so such
messages never reach it: `needed(raw)` looks (one pass over the bytes, in C) for more delimiter
lines or nesting markers than the limits allow, and only those messages are walked here, over
raw bytes with mime/parts.py. BODYSTRUCTURE (here) and body sections (`find`, used by
protocols/imap/sections.py) come from the same walk, so part numbers always agree.

Rules kept: the total, opaque parts included, never exceeds MAX_PARTS (each open multipart
keeps room for its own opaque tail); nesting never exceeds MAX_DEPTH; never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailpair.mime.parts import Entity, multipart_end, multipart_spans, split

MAX_PARTS = 10_000
MAX_DEPTH = 100
OPAQUE = "application/octet-stream"


def needed(raw: bytes) -> bool:
    """True when the message may hold more parts or deeper nesting than the limits (then only
    the bounded walk may look at it). Plain byte counts (memchr speed) decide almost every
    message: nesting needs a delimiter line or a message/rfc822 ("822") per level, so below the
    limit in those counts nothing can be too deep; only past it are the markers counted exactly."""
    delimiters = raw.count(b"\n--")
    if delimiters > MAX_PARTS:
        return True
    if delimiters + raw.count(b"822") <= MAX_DEPTH:
        return False
    low = raw.lower()
    return low.count(b"boundary") + low.count(b"message/rfc822") > MAX_DEPTH


@dataclass(slots=True)
class Node:
    entity: Entity
    ctype: str
    children: list[Node] | None = None  # a multipart's parts
    message: Node | None = None  # the message a message/rfc822 part encloses
    params: dict[str, str] = field(default_factory=dict)
    opaque: bool = False  # what is past the limits (not a part that says octet-stream itself)


def walk(raw: bytes) -> Node:
    budget = [MAX_PARTS]

    def opaque(body: bytes) -> Node:
        budget[0] -= 1
        return Node(Entity(b"", body, OPAQUE), OPAQUE, opaque=True)

    def node(entity: Entity, depth: int, is_part: bool) -> Node:
        budget[0] -= 1
        ctype, params = entity.content_type()
        if ctype.startswith("multipart/") and params.get("boundary"):
            if depth >= MAX_DEPTH:
                return Node(Entity(entity.header, entity.body, OPAQUE), OPAQUE, opaque=True)
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            children: list[Node] = []
            body = entity.body
            for start, end in multipart_spans(body, params["boundary"]):
                # Keep one part of the budget for each open level's opaque tail.
                if budget[0] <= depth + 2:
                    children.append(opaque(body[start : multipart_end(body, params["boundary"], start)]))
                    break
                child = split(body[start:end])
                child.default = child_default
                children.append(node(child, depth + 1, True))
            return Node(entity, ctype, children=children, params=params)
        if ctype == "message/rfc822" and is_part:
            if depth >= MAX_DEPTH or budget[0] <= depth + 2:
                return Node(Entity(entity.header, entity.body, OPAQUE), OPAQUE, opaque=True)
            return Node(entity, ctype, message=node(split(entity.body), depth + 1, False), params=params)
        return Node(entity, ctype, params=params)

    return node(split(raw), 0, False)


def find(raw: bytes, path: list[int], no_such_part: type[Exception]) -> tuple[Entity, bool]:
    """sections.find over the bounded walk: the entity at path and whether it is a message."""
    n = walk(raw)
    is_message = True
    for k in path:
        if not is_message and n.message is not None:
            n = n.message
        if n.children is not None:
            if not 1 <= k <= len(n.children):
                raise no_such_part(f"no part {k}")
            n = n.children[k - 1]
            is_message = False
        elif k == 1:
            is_message = False
        else:
            raise no_such_part(f"no part {k}")
    return n.entity, is_message
