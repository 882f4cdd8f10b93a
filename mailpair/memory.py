"""Memory a node gives back: large buffers (a 25 MiB message, its record, a FETCH of it) are
returned to the system when they are freed, so a node's resident size after a large message
falls back instead of staying at its peak.

Why: glibc's malloc serves requests above its mmap threshold with mmap (returned on free), but
it raises that threshold each time such a block is freed, up to 32 MiB; after the first large
message every later one comes from the heap, which is kept. Setting the threshold explicitly
turns that adjustment off (mallopt(3), M_MMAP_THRESHOLD). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("mailpair.node")

M_MMAP_THRESHOLD = -3
LARGE = 1024 * 1024  # buffers from this size on are mapped on their own and unmapped when freed


def return_large_buffers(threshold: int = LARGE) -> bool:
    """Fix glibc's mmap threshold; True when it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        logger.debug("mallopt is not available; large buffers follow the allocator's own policy")
        return False
