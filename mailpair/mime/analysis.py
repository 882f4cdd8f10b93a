"""The one entry to message analysis: the lean path over raw bytes (mime/lean.py) first, and
structure.py's own paths for what it does not take.

It sits above both so that lean.py may build on structure.py's helpers without structure.py
importing it back.
"""

from __future__ import annotations

from mailpair.mime import lean, structure
from mailpair.mime.structure import Nested


def analyse(raw: bytes) -> tuple[Nested, Nested]:
    """(envelope, bodystructure) of a raw RFC 5322 message; never raises."""
    result = lean.analyse_lean(raw)  # looked up on the module: tests turn the lean path off
    return result if result is not None else structure.analyse_full(raw)
