"""What a node of the pair does next: a pure function of what it has observed, and the rules
around it (write deadline, mount dial, promises, MODSEQ and UID reservations).

Nothing here does I/O or reads a clock: `now` and every observation come in as arguments, so
the same code runs in the node (loop.py) and in the deterministic simulator.

Rules this module keeps (CLUSTER.md):
- Three votes: this node, the peer, the witness. An active may write only while it holds two: its
  own and (the witness lease or the peer's promise). It may write until the later of the two
  lapses, minus the margin (`may_write_until`), and checks that before a group commit and again
  after the fsync, before answering.
- The lease runs from the START of the renew attempt that wrote it. The peer's promise runs from
  the moment the request it answered was SENT. Both are measured on this node's clock only.
- A passive may take over only when (1) it has watched the witness version unchanged for
  lease_ttl + margin, counted from when the read showing it RETURNED, (2) its own last promise to
  the active has lapsed, (3) its copy is not stale (it holds the LSN the holder knew to be on both
  copies), and (4) the mount dial allows the records that may be missing. Then it stops promising
  (loop.py) before it tries the witness compare-and-swap that raises the epoch.
- Every activation takes a new epoch, above every epoch this node has seen. A node never acts in
  an epoch lower than one it has seen: an active that sees a higher one demotes at once.
- An active renews only if its store has worked in the last interval, so a wedged active lets go.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from .witness import Token, WitnessState

MODSEQ_LSN_BITS = 40
MODSEQ_MAX = (1 << 63) - 1  # IMAP's mod-sequence-value is at most 2^63 - 1


class Role(enum.Enum):
    PASSIVE = "passive"
    ACTIVE = "active"


class Kind(enum.Enum):
    WAIT = "wait"  # nothing to do now; the reason says why (shown in status)
    RENEW = "renew"  # active: write a new witness version (the lease)
    FENCE = "fence"  # active: both promises lapsed; refuse writes, keep trying to renew
    PROMOTE = "promote"  # passive: take over in a new epoch (stop promising, fix E, win the witness)
    DEMOTE = "demote"  # active: another node holds a newer epoch; rejoin as its passive
    FOLLOW = "follow"  # passive: a new epoch began at the witness; follow its holder


class DialKind(enum.Enum):
    LOSSLESS = "lossless"
    GOOD = "good"
    BEST = "best"


@dataclass(frozen=True)
class Dial:
    """The mount dial: how many acknowledged records a failover may lose without a person deciding."""

    kind: DialKind = DialKind.LOSSLESS
    limit: int = 0  # records; lossless is always 0

    @classmethod
    def parse(cls, text: str, good_limit: int = 1000, best_limit: int = 100_000) -> Dial:
        kind = DialKind(text)
        return cls(kind, {DialKind.LOSSLESS: 0, DialKind.GOOD: good_limit, DialKind.BEST: best_limit}[kind])


@dataclass(frozen=True)
class Settings:
    renew_interval: float = 1.0
    lease_ttl: float = 3.0
    peer_promise: float = 3.0
    margin: float = 0.5
    dial: Dial = field(default_factory=Dial)
    mode: str = "sync"  # the mode a new active writes into the witness
    reserve_lsn: int = 500  # how far ahead of use an active reserves LSNs in the witness
    reserve_uid: int = 5000

    def __post_init__(self) -> None:
        if not 0 < self.renew_interval < self.lease_ttl:
            raise ValueError("renew_interval must be positive and below lease_ttl")
        if not 0 <= self.margin < min(self.lease_ttl, self.peer_promise):
            raise ValueError("margin must be below lease_ttl and peer_promise")


@dataclass(frozen=True)
class WitnessView:
    """The last witness state this node read, and when (on its clock) that version was first seen."""

    state: WitnessState | None
    token: Token
    changed_at: float  # when the read that first showed this version RETURNED
    read_at: float  # when the latest successful read returned


@dataclass(frozen=True)
class Observed:
    me: str
    peer: str
    role: Role
    epoch: int  # the epoch this node is active in, or follows as passive
    highest_epoch_seen: int  # kept on this node's disk; never act below it
    settings: Settings
    witness: WitnessView | None = None
    fenced: bool = False  # the node has been told to fence (an active whose votes lapsed)
    lease_start: float | None = None  # start of this node's last successful witness write in its epoch
    promise_from: float | None = None  # active: send time of the latest request the peer promised on
    promise_made_at: float | None = None  # passive: when it last promised (or started)
    store_ok_at: float | None = None  # last commit or canary that worked
    stored_lsn: int = 0  # durable in this node's log (passive: E if it took over now)
    replayed_lsn: int = 0
    own_reserved_lsn: int = 0  # the highest reservation this node holds from the stream
    preferred: bool = False  # this node takes a fresh witness at once (the pair's first active)


@dataclass(frozen=True)
class Action:
    kind: Kind
    reason: str
    epoch: int | None = None  # PROMOTE: the epoch to take; DEMOTE / FOLLOW: the epoch to follow
    holder: str | None = None  # DEMOTE / FOLLOW: the active to follow


def may_write_until(lease_start: float | None, promise_from: float | None, settings: Settings) -> float:
    """The instant (this node's clock) after which an active must not write or answer a write.

    The later of the lease (from the start of the renew that wrote it) and the peer's promise (from
    when the request it answered was sent), minus the margin; -inf with neither.
    """
    ends = []
    if lease_start is not None:
        ends.append(lease_start + settings.lease_ttl)
    if promise_from is not None:
        ends.append(promise_from + settings.peer_promise)
    return max(ends) - settings.margin if ends else -math.inf


def should_promise(role: Role, taking_over: bool, request_epoch: int, highest_epoch_seen: int, letting_go: bool) -> bool:
    """Whether a heartbeat reply carries the promise "I will not take over for peer_promise seconds".

    Only a passive that is not taking over promises, only to an active of an epoch it has not seen
    superseded, and not to one that says it is fenced or letting go (it could not use the promise,
    and promising would keep this node from ever taking over: the one-way link case).
    """
    return role is Role.PASSIVE and not taking_over and not letting_go and request_epoch >= highest_epoch_seen


def dial_allows(dial: Dial, state: WitnessState, stored_lsn: int, own_reserved_lsn: int = 0) -> tuple[bool, int, str]:
    """(allowed, upper bound of missing records, reason) for a failover that would end at stored_lsn.

    In sync mode every acknowledgement waited for this copy, so nothing acknowledged is missing.
    In async mode the old active may have used LSNs up to its reservation (the witness's, or a higher
    one it shipped to this copy), so at most reserved - stored records are missing.
    """
    if state.mode == "sync":
        return True, 0, "sync: nothing acknowledged is missing"
    upper = max(0, max(state.reserved_lsn, own_reserved_lsn) - stored_lsn)
    since = f"async since LSN {state.async_from_lsn}"
    if dial.kind is DialKind.LOSSLESS:
        if upper == 0:
            return True, 0, f"{since}, but nothing can be missing"
        return False, upper, f"mount dial lossless: {since}, up to {upper} records missing"
    if upper <= dial.limit:
        return True, upper, f"mount dial {dial.kind.value}: up to {upper} records missing (limit {dial.limit})"
    return False, upper, f"mount dial {dial.kind.value}: up to {upper} records missing, over the limit {dial.limit}"


def modseq(epoch: int, lsn: int) -> int:
    """A MODSEQ that never repeats across failovers and grows at each: (epoch << 40) | lsn."""
    if not 0 <= lsn < (1 << MODSEQ_LSN_BITS):
        raise ValueError(f"LSN {lsn} does not fit the MODSEQ's {MODSEQ_LSN_BITS} bits")
    value = (epoch << MODSEQ_LSN_BITS) | lsn
    if epoch < 0 or value > MODSEQ_MAX:
        raise ValueError(f"epoch {epoch} does not fit a MODSEQ")
    return value


def reserve_ahead(used: int, reserved: int, block: int) -> int:
    """The reservation to write at a renew: raised by a block once half of the headroom is used."""
    if reserved - used < block // 2:
        return used + block
    return reserved


def first_uid_after_takeover(witness_reserved_uid: int, own_reserved_uid: int, highest_uid: int) -> int:
    """The first UID a new active may assign: above every UID the old one may have shown."""
    return max(witness_reserved_uid, own_reserved_uid, highest_uid) + 1


def uid_gap(reserved_uid: int, highest_uid: int) -> int:
    """The gap a new active writes into its epoch record (applied lazily to each mailbox)."""
    return max(0, reserved_uid - highest_uid)


def _in(seconds: float) -> str:
    return f"+{seconds:.1f} s"


def decide(o: Observed, now: float) -> Action:
    """What the node does next. Pure: the same observation and instant give the same action."""
    s = o.settings
    w = o.witness
    st = w.state if w is not None else None
    if o.role is Role.ACTIVE:
        return _decide_active(o, now, st)
    if w is None:
        return Action(Kind.WAIT, "witness not read yet")
    next_epoch = max(st.epoch if st else 0, o.highest_epoch_seen) + 1
    if st is not None and st.holder not in (None, o.me) and st.epoch > o.epoch:
        return Action(Kind.FOLLOW, f"epoch {st.epoch} began on {st.holder}: following it", epoch=st.epoch, holder=st.holder)
    if st is not None and st.epoch < o.highest_epoch_seen:
        # This node kept a higher epoch than the witness holds: the witness lost its history
        # (restored, wiped, another cluster's). Acting on it could reopen an epoch: a person decides.
        return Action(
            Kind.WAIT, f"witness is at epoch {st.epoch}, below epoch {o.highest_epoch_seen} this node has seen: witness reset?"
        )
    stale = st is not None and o.stored_lsn < st.both_stored_lsn
    if st is not None and st.holder == o.me:
        # Restarted, or this node's own takeover landed but its reply was lost: it holds the witness,
        # but every activation takes a new epoch.
        if stale:
            return Action(Kind.WAIT, f"copy is stale: stored LSN {o.stored_lsn} < {st.both_stored_lsn} known on both copies")
        return Action(Kind.PROMOTE, f"witness names this node in epoch {st.epoch}: activating in a new epoch", epoch=next_epoch)
    if (st is None or st.holder is None) and o.preferred:
        return Action(Kind.PROMOTE, "fresh witness: first activation", epoch=next_epoch)
    holder = st.holder if st is not None and st.holder else "nobody"
    lease_end = w.changed_at + s.lease_ttl + s.margin
    if now < lease_end:
        return Action(Kind.WAIT, f"lease held by {holder} until {_in(lease_end - now)}")
    if o.promise_made_at is not None and now < o.promise_made_at + s.peer_promise:
        return Action(Kind.WAIT, f"promised {o.peer} not to take over until {_in(o.promise_made_at + s.peer_promise - now)}")
    if stale:
        return Action(Kind.WAIT, f"copy is stale: stored LSN {o.stored_lsn} < {st.both_stored_lsn} known on both copies")
    if st is not None:
        ok, _, why = dial_allows(s.dial, st, o.stored_lsn, o.own_reserved_lsn)
        if not ok:
            return Action(Kind.WAIT, why)
    else:
        why = "fresh witness"
    return Action(Kind.PROMOTE, f"lease of {holder} lapsed {now - lease_end:.1f} s ago; {why}", epoch=next_epoch)


def _decide_active(o: Observed, now: float, st: WitnessState | None) -> Action:
    s = o.settings
    if st is not None and st.epoch > o.epoch or (st is not None and st.epoch == o.epoch and st.holder != o.me):
        return Action(
            Kind.DEMOTE, f"epoch {st.epoch} belongs to {st.holder}: rejoining as passive", epoch=st.epoch, holder=st.holder
        )
    if o.highest_epoch_seen > o.epoch:
        return Action(
            Kind.DEMOTE,
            f"the peer answered with epoch {o.highest_epoch_seen}: rejoining as passive",
            epoch=o.highest_epoch_seen,
            holder=o.peer,
        )
    deadline = may_write_until(o.lease_start, o.promise_from, s)
    if now >= deadline and not o.fenced:
        return Action(Kind.FENCE, "neither the witness lease nor the peer's promise is held: fenced")
    if o.store_ok_at is None or now - o.store_ok_at > s.renew_interval:
        return Action(Kind.WAIT, "store has not worked in the last interval: not renewing, letting the lease lapse")
    lease_end = o.lease_start + s.lease_ttl - s.margin if o.lease_start is not None else -math.inf
    if o.lease_start is None or now - o.lease_start >= s.renew_interval:
        if o.fenced:
            return Action(Kind.RENEW, "fenced: trying to win the lease back")
        if now >= lease_end:  # the witness has not answered: the peer's promise carries the writes
            return Action(
                Kind.RENEW, f"witness lease lapsed: writing on {o.peer}'s promise until {_in(deadline - now)}, renewing"
            )
        return Action(Kind.RENEW, "renewing the lease")
    return Action(
        Kind.WAIT, f"active in epoch {o.epoch}: lease until {_in(lease_end - now)}, may write until {_in(deadline - now)}"
    )
