"""Real mail for tests, benchmarks and sample mail: messages of an exact size shaped like what
mailboxes hold, and a mix of sizes like a real mailbox's.

Why it exists: every test and benchmark once used 2 to 4 KiB messages, and a message over 64 KiB
stopped the passive copy without any of them noticing. Half of real mail is over 64 KiB (a photo,
a PDF); the tail reaches the size limit.

Rules this module keeps:
- `message(size)` is exactly `size` bytes, CRLF line ends, a valid RFC 5322 / MIME message:
  plain text when small, else multipart/mixed with a multipart/alternative text part and base64
  attachments (76-character lines), as a mail client writes them.
- Everything is a pure function of its arguments (the seed included): the same call gives the same
  bytes in a test, a benchmark and on another machine.
- `sizes()` follows the shape of real mailboxes: most messages a few KiB to a few hundred KiB,
  a tail of attachments from 1 MiB up to the limit; `boundary_sizes()` gives the exact edges the
  code has (read windows, a MiB, the segment, the limit and one byte more).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator

KiB = 1024
MiB = 1024 * 1024
DEFAULT_LIMIT = 25 * MiB
SMALLEST = 600  # below this the headers alone do not fit
_MULTIPART_FROM = 6 * KiB  # smaller messages are plain text
_ATTACHMENTS = [
    ("image/jpeg", "IMG_{n:04d}.jpg"),
    ("application/pdf", "report-{n}.pdf"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "figures-{n}.xlsx"),
    ("application/zip", "photos-{n}.zip"),
]
_WORDS = (
    "the meeting notes are attached please review before thursday we agreed on the budget and the "
    "timeline for the next release let me know if anything is missing thanks again for your help with "
    "this the figures for last quarter look better than expected"
).split()


def _text(rnd: random.Random, size: int) -> bytes:
    """Readable text of exactly size bytes (at least 2), in CRLF lines of at most 82 bytes."""
    out: list[bytes] = []
    left = size
    while left > 160:
        words: list[str] = []
        n = 0
        while n < 60:
            w = rnd.choice(_WORDS)
            words.append(w)
            n += len(w) + 1
        line = " ".join(words).encode()[:78] + b"\r\n"
        out.append(line)
        left -= len(line)
    # the last one or two lines take what is left, each at least a CRLF
    for part in (left,) if left <= 80 else (left // 2, left - left // 2):
        out.append(b"-" * (part - 2) + b"\r\n")
    return b"".join(out)


def _b64_len(raw: int) -> int:
    """Length of base64 of raw bytes in 76-character CRLF lines (as _b64 writes it)."""
    chars = 4 * ((raw + 2) // 3)
    return chars + 2 * ((chars + 75) // 76)


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _raw_for(encoded_budget: int) -> int:
    """The largest attachment whose base64 fits in encoded_budget bytes."""
    lo, hi = 0, max(0, encoded_budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _b64_len(mid) <= encoded_budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _headers(seed: int, to: str, sender: str, subject: str, message_id: str, extra: str) -> bytes:
    day = 1 + seed % 28
    return (
        f"From: Sender {seed % 97} <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, {day:02d} Nov 2026 {seed % 24:02d}:{seed % 60:02d}:00 +0000\r\n"
        f"Message-ID: {message_id}\r\n"
        f"MIME-Version: 1.0\r\n{extra}"
    ).encode()


def message(
    size: int,
    *,
    seed: int = 0,
    to: str = "user1@example.test",
    sender: str = "sender@example.org",
    subject: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """A message of exactly size bytes (at least SMALLEST)."""
    if size < SMALLEST:
        raise ValueError(f"a message of {size} bytes is too small for its headers (at least {SMALLEST})")
    rnd = random.Random(seed)
    subject = subject if subject is not None else f"Mix {seed} ({size} bytes)"
    message_id = message_id if message_id is not None else f"<mix-{seed}-{size}@example.org>"
    if size < _MULTIPART_FROM:
        head = _headers(seed, to, sender, subject, message_id, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
        return head + _text(rnd, size - len(head))
    outer, alt = f"mix-outer-{seed}", f"mix-alt-{seed}"
    head = _headers(seed, to, sender, subject, message_id, f'Content-Type: multipart/mixed; boundary="{outer}"\r\n\r\n')
    preamble = b"This is a multi-part message in MIME format.\r\n"
    count = 1 if size < 512 * KiB else 1 + seed % 3  # big messages often carry a few files
    atts = [_ATTACHMENTS[(seed + i) % len(_ATTACHMENTS)] for i in range(count)]
    att_heads = [
        (
            f'--{outer}\r\nContent-Type: {ctype}; name="{name.format(n=seed + i)}"\r\n'
            f'Content-Disposition: attachment; filename="{name.format(n=seed + i)}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        for i, (ctype, name) in enumerate(atts)
    ]
    alt_open = (
        f'--{outer}\r\nContent-Type: multipart/alternative; boundary="{alt}"\r\n\r\n'
        f"--{alt}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode()
    html_open = f"--{alt}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n".encode()
    alt_close = f"--{alt}--\r\n".encode()
    close = f"--{outer}--\r\n".encode()
    fixed = len(head) + len(preamble) + len(alt_open) + len(html_open) + len(alt_close) + sum(map(len, att_heads)) + len(close)
    text_budget = min(2400 + seed % 1500, (size - fixed) // 3)
    html_wrap = (b"<html><body><p>", b"</p></body></html>\r\n")
    budget = size - fixed - 2 * text_budget  # what the attachments' base64 may take
    per = budget // count
    raws = [_raw_for(per) for _ in atts]
    spare = budget - sum(_b64_len(r) for r in raws)  # what base64's granularity leaves goes to the text
    plain = _text(rnd, text_budget + spare)
    html_body = _text(rnd, text_budget - len(html_wrap[0]) - len(html_wrap[1]))
    parts = [head, preamble, alt_open, plain, html_open, html_wrap[0], html_body, html_wrap[1], alt_close]
    for att_head, raw in zip(att_heads, raws, strict=True):
        parts += [att_head, _b64(rnd.randbytes(raw))]
    parts.append(close)
    out = b"".join(parts)
    assert len(out) == size, (len(out), size)
    return out


def sizes(n: int, *, seed: int = 0, max_bytes: int = DEFAULT_LIMIT) -> list[int]:
    """n message sizes shaped like a real mailbox: about 55% from 2 to 64 KiB, 30% from 64 to
    512 KiB, 10% from 512 KiB to 1 MiB and 5% from 1 MiB to max_bytes (log-uniform in each band)."""
    rnd = random.Random(seed)
    bands = [(0.55, 2 * KiB, 64 * KiB), (0.30, 64 * KiB, 512 * KiB), (0.10, 512 * KiB, MiB), (0.05, MiB, max_bytes)]
    out = []
    for _ in range(n):
        r = rnd.random()
        band = bands[-1]
        for band in bands:  # noqa: B007 - the band the draw falls in is what the loop finds
            if r < band[0]:
                break
            r -= band[0]
        lo, hi = min(band[1], max_bytes), min(band[2], max_bytes)
        out.append(max(SMALLEST, int(lo * (hi / lo) ** rnd.random()) if hi > lo else lo))
    return out


def boundary_sizes(limit: int = DEFAULT_LIMIT, segment: int | None = None) -> list[int]:
    """The exact edges: the first read window (64 KiB) and one byte either side, a MiB, the
    segment size when given, the limit, and one byte over the limit (which must be refused)."""
    edges = [64 * KiB - 1, 64 * KiB, 64 * KiB + 1, MiB]
    if segment is not None:
        edges.append(segment)
    edges += [limit, limit + 1]
    return sorted(set(edges))


def mix(n: int, *, seed: int = 0, to: str = "user1@example.test", max_bytes: int = DEFAULT_LIMIT) -> Iterator[bytes]:
    """n messages of sizes(n) (each with its own seed, so Message-IDs differ)."""
    for i, size in enumerate(sizes(n, seed=seed, max_bytes=max_bytes)):
        yield message(size, seed=seed * 100_003 + i, to=to)
