"""MIME analysis with limits, for messages built to exhaust it: at most MAX_PARTS parts in all
and MAX_DEPTH levels of nesting (Dovecot's defaults); the MAX_PARTS-th part is the last and runs
to the end of the message (the rule mime/lean.py keeps, so both paths agree), and an entity
past MAX_DEPTH is one opaque part (application/octet-stream), so a 25 MiB message of tiny parts
costs bounded memory and a bounded BODYSTRUCTURE record.

The email package builds a Message object per part before anything can be counted, so such
messages never reach it: `needed(raw)` looks (one pass over the bytes, in C) for more delimiter
lines or nesting markers than the limits allow, and only those messages are walked here, over
raw bytes with mime/parts.py. BODYSTRUCTURE (here) and body sections (`find`, used by
protocols/imap/sections.py) come from the same walk, so part numbers always agree.

Rules kept: never more than MAX_PARTS parts, the message itself counted; nesting never deeper
than MAX_DEPTH; the same tree for BODYSTRUCTURE and for body sections; never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailpair.mime.parts import Entity, multipart_spans, split

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
    capped: bool = False  # the last part (the MAX_PARTS-th) is this one or inside it


def walk(raw: bytes) -> Node:
    """The part tree under the limits. Parts are counted in document order, the message itself
    first, as mime/lean.py counts them: the MAX_PARTS-th is the last one and runs to the end of
    the message (its own type if a leaf, opaque if composite), and a message/rfc822 holding it
    runs there too, so both paths, and the body sections walked here, agree on every number.
    Past MAX_DEPTH levels an entity is one opaque part (lean.py leaves those to the full parse,
    which reaches this walk)."""
    count = [0]

    def node(start: int, end: int, default: str, depth: int, is_part: bool) -> Node:
        entity = split(raw[start:end])
        entity.default = default
        body_start = start + len(entity.header)
        count[0] += 1
        ctype, params = entity.content_type()
        composite = ctype.startswith("multipart/") or (ctype == "message/rfc822" and is_part)
        if count[0] >= MAX_PARTS:  # the last part: to the end of the message
            if composite:
                return Node(Entity(entity.header, raw[body_start:], OPAQUE), OPAQUE, opaque=True, capped=True)
            return Node(Entity(entity.header, raw[body_start:], default), ctype, params=params, capped=True)
        if composite and depth >= MAX_DEPTH:
            return Node(Entity(entity.header, entity.body, OPAQUE), OPAQUE, opaque=True)
        if ctype.startswith("multipart/") and params.get("boundary"):
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            children: list[Node] = []
            capped = False
            for a, b in multipart_spans(entity.body, params["boundary"]):
                child = node(body_start + a, body_start + b, child_default, depth + 1, True)
                children.append(child)
                if child.capped:
                    capped = True
                    break
            return Node(entity, ctype, children=children, params=params, capped=capped)
        if ctype == "message/rfc822" and is_part:
            inner = node(body_start, start + len(entity.header) + len(entity.body), "text/plain", depth + 1, False)
            if inner.capped:  # measured to the end of the message, as the capped part is
                entity = Entity(entity.header, raw[body_start:], default)
            return Node(entity, ctype, message=inner, params=params, capped=inner.capped)
        return Node(entity, ctype, params=params)

    return node(0, len(raw), "text/plain", 0, False)


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
