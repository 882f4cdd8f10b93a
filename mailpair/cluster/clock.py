"""The cluster's clock: seconds that keep counting through a suspend, on this machine only.

Rules this module keeps:
- Leases, promises and write deadlines are measured with one clock that never goes backwards and
  does not stop while the machine sleeps (CLOCK_BOOTTIME on Linux; a suspended active must wake
  up *past* its deadline, not before it). Where BOOTTIME is missing, time.monotonic stands in.
- Wall-clock time is never used, and two machines' clocks are never compared: every interval is
  measured on the machine that acts on it; the margin covers the difference in their rates.
- Code takes a `Clock` object, so tests and the simulator put a fake one in its place.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this machine's clock (an arbitrary origin; only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class BootClock:
    """The real clock: CLOCK_BOOTTIME where the platform has it, else the monotonic clock."""

    def __init__(self) -> None:
        clock_id = getattr(time, "CLOCK_BOOTTIME", None)
        if clock_id is not None:
            try:
                time.clock_gettime(clock_id)
            except OSError:  # an old kernel or a sandbox that refuses it
                clock_id = None
        self._clock_id = clock_id
        self.source = "CLOCK_BOOTTIME" if clock_id is not None else "monotonic"

    def now(self) -> float:
        if self._clock_id is not None:
            return time.clock_gettime(self._clock_id)
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock a test moves by hand; `rate` makes it run fast or slow against the test's time."""

    def __init__(self, start: float = 1000.0, rate: float = 1.0) -> None:
        self._now = start
        self.rate = rate

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self._now += seconds * self.rate

    async def sleep(self, seconds: float) -> None:
        # The test's time passes at once; yield so other tasks run, as a real sleep would let them.
        self.advance(max(0.0, seconds) / self.rate)
        await asyncio.sleep(0)
