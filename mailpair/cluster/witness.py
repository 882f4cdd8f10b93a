"""The witness: the third vote, one small record changed only by compare-and-swap.

One interface, several backends (a directory on a share, etcd), in the shape of Patroni's DCS:
`read()` returns an immutable `WitnessState` with an opaque `Token` naming the version read, and
`compare_and_swap(token, new)` writes `new` only if the witness still holds that version.

Rules every backend keeps:
- Never a blind write: a state changes only by CAS against the version the writer saw, so of two
  nodes racing from one version exactly one wins.
- The lease is not a timer in the witness. A holder shows it is alive by writing a new `version`
  every renew interval; another node may write only after it has *watched* the version stay the
  same for lease_ttl + margin on its own clock (decide.py). So the state never expires: epoch,
  holder and reservations survive any outage of the holder.
- An ambiguous outcome (timeout, lost reply) is resolved by reading back: the write happened
  exactly when the witness now holds the `nonce` this attempt wrote. If the read-back fails too,
  the caller gets WitnessError and must count the attempt as not made (it may still land later;
  then it names this node, which decide() handles as any state written by this node).
- Every call is bounded by the backend's timeout; every failure is a WitnessError.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["sync", "async"]


class WitnessError(Exception):
    """The witness could not be read or written (unreachable, timed out, unreadable state)."""


@dataclass(frozen=True)
class Token:
    """An opaque name of one stored version (a file number, an etcd mod revision). Always truthy."""

    value: int


@dataclass(frozen=True)
class WitnessState:
    """What the witness holds. `version` grows at every write, `epoch` at every change of active.

    reserved_lsn / reserved_uid: the holder may not write an LSN or assign a UID above these (it
    raises them in the witness ahead of need), so a new active knows an upper bound of what the old
    one may have used. mode / async_from_lsn: sync, or async since that LSN (a fallback is written
    here before the first acknowledgement that did not wait for the passive). both_stored_lsn: the
    last LSN the holder knew to be stored on both copies; a copy that lacks it is stale.
    """

    epoch: int = 0
    holder: str | None = None
    version: int = 0
    nonce: str = ""
    reserved_lsn: int = 0
    reserved_uid: int = 0
    mode: Mode = "sync"
    async_from_lsn: int | None = None
    both_stored_lsn: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("sync", "async"):
            raise ValueError(f"witness mode must be sync or async, not {self.mode!r}")
        if self.mode == "async" and self.async_from_lsn is None:
            raise ValueError("an async witness state names the LSN the fallback began at")
        for name in ("epoch", "version", "reserved_lsn", "reserved_uid", "both_stored_lsn"):
            if getattr(self, name) < 0:
                raise ValueError(f"witness {name} cannot be negative")

    def successor(self, **changes: Any) -> WitnessState:
        """The next state: version + 1 and a fresh nonce (the one an ambiguous outcome is matched by)."""
        changes.setdefault("nonce", new_nonce())
        return dataclasses.replace(self, version=self.version + 1, **changes)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> WitnessState:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            known = {f.name for f in dataclasses.fields(cls)}
            # Unknown keys are kept out, not refused: a newer node may add fields an older one ignores.
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise WitnessError(f"witness state is not valid: {exc}") from exc


def new_nonce() -> str:
    return secrets.token_hex(12)


class Witness(abc.ABC):
    """The interface the cluster loop uses. Backends implement `_read` and `_cas`."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout

    @abc.abstractmethod
    async def _read(self) -> tuple[WitnessState | None, Token]:
        """The newest state (None on a fresh witness) and its token; raise WitnessError on failure."""

    @abc.abstractmethod
    async def _cas(self, expected: Token, new: WitnessState) -> Token | None:
        """Write `new` if `expected` is still current: its token, or None if another write came first.
        Raise WitnessError (or time out) when the outcome is unknown."""

    async def close(self) -> None:  # noqa: B027 - a backend without resources needs nothing here
        """Release what the backend holds (sessions, threads)."""

    def describe(self) -> str:
        return type(self).__name__

    async def read(self) -> tuple[WitnessState | None, Token]:
        try:
            return await asyncio.wait_for(self._read(), self.timeout)
        except TimeoutError as exc:
            raise WitnessError(f"witness read timed out after {self.timeout:g} s") from exc
        except WitnessError:
            raise
        except OSError as exc:
            raise WitnessError(f"witness read failed: {exc}") from exc

    async def compare_and_swap(self, expected: Token, new: WitnessState) -> Token | None:
        """Write `new` if the witness still holds version `expected`.

        Returns the new state's token (truthy) if this write is the one stored, None if another
        write came first. A lost reply is resolved by reading back the nonce; WitnessError means the
        outcome is still unknown and the caller must act as if the write was not made.
        """
        if not new.nonce:
            raise ValueError("a witness write needs a nonce (use WitnessState.successor)")
        try:
            return await asyncio.wait_for(self._cas(expected, new), self.timeout)
        except (TimeoutError, WitnessError, OSError) as exc:
            first = exc
        try:
            state, token = await self.read()
        except WitnessError as exc:
            raise WitnessError(f"witness write outcome unknown ({first}); read-back failed: {exc}") from exc
        if state is not None and state.nonce == new.nonce:
            return token
        return None


class MemoryWitness(Witness):
    """A witness in this process's memory: for unit tests of the loop, and the reference of the contract."""

    def __init__(self, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        self._state: WitnessState | None = None
        self._revision = 0
        self.fail = False  # a test sets this to make the witness unreachable

    async def _read(self) -> tuple[WitnessState | None, Token]:
        if self.fail:
            raise WitnessError("memory witness is set to fail")
        return self._state, Token(self._revision)

    async def _cas(self, expected: Token, new: WitnessState) -> Token | None:
        if self.fail:
            raise WitnessError("memory witness is set to fail")
        if expected.value != self._revision:
            return None
        self._revision += 1
        self._state = new
        return Token(self._revision)
