"""The cluster loop: runs decide() over what the node observes and turns its answers into effects.

Two layers, so the logic is tested without sockets or sleeps (the h11 shape):
- `Agent` is the state machine, sans I/O. Inputs are method calls carrying this node's clock
  reading (`poll`, `read_done`, `write_done`, `prepared`, heartbeat requests and replies); outputs
  are `Effect` values (read or write the witness, fence, become active / passive, ...). The
  deterministic simulator drives it directly.
- `ClusterLoop` is the thin async driver for a running node: it executes the effects against a
  `Witness`, a `PeerLink` and the node (`NodeControl`), with a `Clock` injected.

Rules this module keeps, beyond decide.py's:
- One witness call in flight at a time; its observations are taken with the clock readings the
  anchors need: a write's lease from the instant the attempt STARTED, a read's observation from
  the instant it RETURNED.
- A passive stops promising in the same step as it decides to take over, before it stops its
  receiver, fixes E and tries the witness; if the compare-and-swap is lost it resumes as passive.
- The highest epoch ever seen is handed to the node to keep on disk (RecordEpoch) before the node
  acts in it; a heartbeat reply or replication answer naming a newer epoch ends writing at once.
- `may_write(now)` is what the node's store asks before a group commit and after its fsync.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .clock import Clock
from .decide import (
    Action,
    Kind,
    Observed,
    Role,
    Settings,
    WitnessView,
    decide,
    dial_allows,
    first_uid_after_takeover,
    may_write_until,
    reserve_ahead,
    should_promise,
    uid_gap,
)
from .witness import Mode, Token, Witness, WitnessError, WitnessState

log = logging.getLogger(__name__)


# What the node reports each tick.


@dataclass(frozen=True)
class NodeStatus:
    stored_lsn: int = 0  # durable in this node's log
    replayed_lsn: int = 0
    store_ok_at: float | None = None  # last commit or canary that worked (this node's clock)
    used_lsn: int = 0  # active: the highest LSN it has written
    used_uid: int = 0  # the highest UID it holds or has assigned
    own_reserved_lsn: int = 0  # reservations this node holds beyond the witness's (shipped and stored)
    own_reserved_uid: int = 0
    both_stored_lsn: int = 0  # active: the last LSN it knows both copies store
    want_mode: Mode = "sync"  # active: the mode the witness should hold (async after a stall)
    want_async_from: int | None = None


# Effects the driver carries out.


@dataclass(frozen=True)
class ReadWitness:
    pass


@dataclass(frozen=True)
class WriteWitness:
    purpose: str  # "renew", "promote" or "handover"
    expected: Token
    new: WitnessState


@dataclass(frozen=True)
class PrepareTakeover:
    """Stop the receiver, refuse records of the old epoch, fsync what is held; answer with E."""


@dataclass(frozen=True)
class BecomeActive:
    epoch: int
    previous_end: tuple[int, int]  # (old epoch, E): the epoch record's previous_end
    first_uid: int
    uid_gap: int
    mode: Mode
    async_from_lsn: int | None


@dataclass(frozen=True)
class BecomePassive:
    epoch: int
    holder: str | None
    was_active: bool  # True: a demotion, the node rejoins (sets aside what the new active lacks)


@dataclass(frozen=True)
class ResumePassive:
    """The takeover was abandoned (the witness went to someone else): restart the receiver."""


@dataclass(frozen=True)
class Fence:
    reason: str


@dataclass(frozen=True)
class Unfence:
    pass


@dataclass(frozen=True)
class ModeChanged:
    """The mode the active must act in. "async" only once a witness write saying so is known to
    be stored; "sync" as soon as a write saying sync is *issued*, since it may land unseen."""

    mode: Mode
    async_from_lsn: int | None


@dataclass(frozen=True)
class RecordEpoch:
    epoch: int


Effect = (
    ReadWitness
    | WriteWitness
    | PrepareTakeover
    | BecomeActive
    | BecomePassive
    | ResumePassive
    | Fence
    | Unfence
    | ModeChanged
    | RecordEpoch
)


@dataclass(frozen=True)
class HeartbeatRequest:
    id: int
    sender: str
    epoch: int
    letting_go: bool  # fenced, or its store is not working: it does not want a promise
    last_promise_id: int | None  # for status: the last request whose reply promised
    stored_lsn: int = 0


@dataclass(frozen=True)
class HeartbeatReply:
    id: int
    sender: str
    epoch: int  # the highest epoch the replier has seen: above the request's, the requester is stale
    promise: bool
    stored_lsn: int = 0


DecideFn = Callable[[Observed, float], Action]


@dataclass
class Agent:
    """One node's cluster state machine (see the module docstring)."""

    me: str
    peer: str
    settings: Settings
    epoch: int  # the highest epoch this node has kept on disk
    started_at: float
    preferred: bool = False
    decide_fn: DecideFn = decide
    # Timing anchors; only the simulator's deliberately broken variants change these.
    lease_anchor: str = "start"  # "start" | "end" of the renew attempt
    window_anchor: str = "returned"  # "returned" | "issued" read

    role: Role = Role.PASSIVE
    highest_epoch_seen: int = 0
    fenced: bool = False
    taking_over: bool = False
    handing_over: bool = False  # switchover: writing stopped, the witness is being handed to the peer
    told_mode: tuple[str, int | None] | None = None  # the mode the node was last told to act in
    view: WitnessView | None = None
    lease_start: float | None = None
    promise_from: float | None = None
    promise_made_at: float | None = None
    last_action: Action | None = None
    pending: str | None = None  # the witness call or node step in flight
    need_read: bool = True
    last_read_issued: float = -math.inf
    last_write_issued: float = -math.inf
    last_heartbeat: float = -math.inf
    last_promise_id: int | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _sent: dict[int, float] = field(default_factory=dict)
    _queued: list[Effect] = field(default_factory=list)
    _status: NodeStatus = field(default_factory=NodeStatus)
    _takeover: Action | None = None
    _takeover_view: WitnessView | None = None
    _takeover_e: int = 0

    def __post_init__(self) -> None:
        self.highest_epoch_seen = max(self.highest_epoch_seen, self.epoch)
        # A restarted node treats its own start as a promise it made: it may have promised just
        # before it stopped, and the active may still be writing on that promise.
        self.promise_made_at = self.started_at

    # ---- what the node asks

    def write_deadline(self) -> float:
        if self.role is not Role.ACTIVE or self.highest_epoch_seen > self.epoch or self.handing_over:
            return -math.inf
        return may_write_until(self.lease_start, self.promise_from, self.settings)

    def may_write(self, now: float) -> bool:
        """Asked by the store before a group commit and after its fsync, before answering."""
        return now < self.write_deadline()

    def observed(self, status: NodeStatus) -> Observed:
        return Observed(
            me=self.me,
            peer=self.peer,
            role=self.role,
            epoch=self.epoch,
            highest_epoch_seen=self.highest_epoch_seen,
            settings=self.settings,
            witness=self.view,
            fenced=self.fenced,
            lease_start=self.lease_start,
            promise_from=self.promise_from,
            promise_made_at=self.promise_made_at,
            store_ok_at=status.store_ok_at,
            stored_lsn=status.stored_lsn,
            replayed_lsn=status.replayed_lsn,
            own_reserved_lsn=status.own_reserved_lsn,
            preferred=self.preferred,
        )

    # ---- the tick

    def poll(self, now: float, status: NodeStatus) -> list[Effect]:
        self._status = status
        out, self._queued = self._queued, []
        if self.pending in ("prepare", "promote"):
            return out  # a takeover is under way; its own callbacks move it on
        for _ in range(3):  # a FENCE or DEMOTE may be followed at once by a RENEW or a read
            action = self.decide_fn(self.observed(status), now)
            self.last_action = action
            if action.kind is Kind.FENCE:
                self.fenced = True
                out.append(Fence(action.reason))
                continue
            if action.kind in (Kind.DEMOTE, Kind.FOLLOW):
                out += self._become_passive(action)
                continue
            if action.kind is Kind.RENEW:
                out += self._renew(now, status)
            elif action.kind is Kind.PROMOTE:
                out += self._start_takeover(action, now)
            break
        if self.pending is None and (
            self.need_read or (self.role is Role.PASSIVE and now - self.last_read_issued >= self.settings.renew_interval)
        ):
            self.pending = "read"
            self.last_read_issued = now
            out.append(ReadWitness())
        return out

    def _become_passive(self, action: Action) -> list[Effect]:
        was_active = self.role is Role.ACTIVE
        out: list[Effect] = []
        epoch = action.epoch or self.epoch
        if epoch > self.highest_epoch_seen:
            self.highest_epoch_seen = epoch
        out.append(RecordEpoch(self.highest_epoch_seen))
        self.role = Role.PASSIVE
        self.epoch = epoch
        self.fenced = False
        self.handing_over = False
        self.told_mode = None
        self.lease_start = None
        self.promise_from = None
        self.promise_made_at = None
        out.append(BecomePassive(epoch, action.holder, was_active))
        return out

    def _renew(self, now: float, status: NodeStatus) -> list[Effect]:
        if self.pending is not None or self.view is None or self.need_read:
            return []
        if now - self.last_write_issued < self.settings.renew_interval / 4:
            return []  # a failed attempt is retried soon, not in a tight loop
        st = self.view.state
        if st is None or st.holder != self.me or st.epoch != self.epoch:
            return []  # decide() demotes on a foreign state; this is only a view not yet read
        s = self.settings
        new = st.successor(
            reserved_lsn=reserve_ahead(status.used_lsn, st.reserved_lsn, s.reserve_lsn),
            reserved_uid=reserve_ahead(status.used_uid, st.reserved_uid, s.reserve_uid),
            both_stored_lsn=max(st.both_stored_lsn, status.both_stored_lsn),
            mode=status.want_mode,
            async_from_lsn=status.want_async_from if status.want_mode == "async" else None,
        )
        self.pending = "renew"
        self.last_write_issued = now
        out: list[Effect] = []
        if new.mode == "sync" and self.told_mode != ("sync", None):
            # Back to sync: the node waits for its peer from now on, before the write is even
            # answered; were it to ack without waiting while this write lands unseen, the witness
            # would say sync over an acknowledgement the passive never stored.
            self.told_mode = ("sync", None)
            out.append(ModeChanged("sync", None))
        out.append(WriteWitness("renew", self.view.token, new))
        return out

    def _start_takeover(self, action: Action, now: float) -> list[Effect]:
        if self.pending is not None or self.view is None or self.need_read:
            return []  # a takeover is judged on a fresh read: after a lost race the view is stale
        # Stop promising in this same step: from here on no reply carries a promise.
        self.taking_over = True
        self.pending = "prepare"
        self._takeover = action
        self._takeover_view = self.view
        return [PrepareTakeover()]

    def prepared(self, stored_lsn: int, now: float, status: NodeStatus | None = None) -> list[Effect]:
        """The node stopped its receiver and fsync'd: stored_lsn is E. Try the witness."""
        if status is not None:
            self._status = status
        view = self._takeover_view
        assert view is not None and self._takeover is not None
        st = view.state
        s = self.settings
        if st is not None and st.holder not in (None, self.me):
            ok, _, why = dial_allows(s.dial, st, stored_lsn, self._status.own_reserved_lsn)
            if not ok:  # only more records can be held after the fsync, but check with the final E
                return self._abandon(now, why)
        self._takeover_e = stored_lsn
        epoch = max(st.epoch if st else 0, self.highest_epoch_seen) + 1
        first_uid = first_uid_after_takeover(st.reserved_uid if st else 0, self._status.own_reserved_uid, self._status.used_uid)
        base = st if st is not None else WitnessState()
        mode: Mode = "sync" if s.mode == "sync" else "async"
        async_from = None if mode == "sync" else stored_lsn + 1
        if st is not None and st.holder == self.me and st.mode == "async":
            # This node goes on from its own log (a restart, a lost reply, a handover to it): records
            # it acknowledged without its peer may still be missing there, so the fallback stays
            # in force until the peer has caught up and a renew writes sync. Writing sync here
            # would let a lossless takeover drop them (found by the simulator, seed 34174).
            mode, async_from = "async", st.async_from_lsn
        new = base.successor(
            epoch=epoch,
            holder=self.me,
            reserved_lsn=stored_lsn + s.reserve_lsn,
            reserved_uid=first_uid - 1 + s.reserve_uid,
            mode=mode,
            async_from_lsn=async_from,
            both_stored_lsn=base.both_stored_lsn,
        )
        self.pending = "promote"
        self.last_write_issued = now
        return [WriteWitness("promote", view.token, new)]

    def prepare_failed(self, now: float, why: str) -> list[Effect]:
        """The node could not stop its receiver or fsync what it holds: give the takeover up."""
        return self._abandon(now, why)

    def _abandon(self, now: float, why: str) -> list[Effect]:
        self.taking_over = False
        self.pending = None
        self.need_read = True
        self._takeover = None
        self.last_action = Action(Kind.WAIT, why)
        return [ResumePassive()]

    # ---- switchover

    def start_handover(self, now: float, status: NodeStatus) -> list[Effect]:
        """Switchover, once the node has drained its group commit and the peer has stored and
        replayed everything: stop writing now, then write the witness naming the peer as holder.

        The peer sees the witness name it and activates in a new epoch at once (decide: "witness
        names this node"), without waiting for a lease to lapse; this node demotes without a fence.
        Returns [] if a witness call is in flight or the view is stale: call again on the next tick.
        """
        if self.role is not Role.ACTIVE or self.pending is not None or self.view is None or self.need_read:
            return []
        st = self.view.state
        if st is None or st.holder != self.me or st.epoch != self.epoch:
            return []
        self.handing_over = True  # from this instant no commit starts and none is answered
        new = st.successor(holder=self.peer, both_stored_lsn=max(st.both_stored_lsn, status.both_stored_lsn))
        self.pending = "handover"
        self.last_write_issued = now
        return [WriteWitness("handover", self.view.token, new)]

    def request_read(self) -> None:
        """Read the witness at the next tick (the peer said it handed the witness over)."""
        self.need_read = True

    # ---- witness results

    def read_done(self, state: WitnessState | None, token: Token, issued_at: float, returned_at: float) -> list[Effect]:
        if self.pending == "read":
            self.pending = None
        self.need_read = False
        seen_at = returned_at if self.window_anchor == "returned" else issued_at
        old = self.view
        if old is None or old.token != token or (old.state and state and old.state.nonce != state.nonce):
            self.view = WitnessView(state, token, changed_at=seen_at, read_at=returned_at)
        else:
            self.view = WitnessView(state, token, changed_at=old.changed_at, read_at=returned_at)
        if self.handing_over and state is not None and state.holder == self.me and state.epoch == self.epoch:
            self.handing_over = False  # the handover did not land: still the holder, writing resumes
        if state is not None and state.epoch > self.highest_epoch_seen:
            self.highest_epoch_seen = state.epoch
            return [RecordEpoch(state.epoch)]
        return []

    def read_failed(self, now: float) -> list[Effect]:
        if self.pending == "read":
            self.pending = None
        return []

    def write_done(self, purpose: str, new: WitnessState, token: Token | None, started_at: float, now: float) -> list[Effect]:
        """A write's answer: the new state's token if it is the one stored, None if it lost the race."""
        self.pending = None
        if token is None:
            self.need_read = True  # someone else wrote: learn what
            if purpose == "promote":
                return self._abandon(now, "another node won the witness")
            return []
        lease_start = started_at if self.lease_anchor == "start" else now
        self.view = WitnessView(new, token, changed_at=now, read_at=now)
        if purpose == "promote":
            return self._promoted(new, lease_start, now)
        if purpose == "handover":
            return []  # the view now names the peer: the next poll demotes this node, without a fence
        out: list[Effect] = []
        if self.lease_start is None or lease_start > self.lease_start:
            self.lease_start = lease_start
        if self.fenced and self.may_write(now):
            self.fenced = False
            out.append(Unfence())
        if self.told_mode != (new.mode, new.async_from_lsn):
            self.told_mode = (new.mode, new.async_from_lsn)
            out.append(ModeChanged(new.mode, new.async_from_lsn))
        return out

    def write_failed(self, purpose: str, started_at: float, now: float) -> list[Effect]:
        """The outcome is unknown (the read-back failed too): count the write as not made."""
        self.pending = None
        self.need_read = True
        if purpose == "promote":
            return self._abandon(now, "the witness did not answer the takeover")
        return []

    def _promoted(self, new: WitnessState, lease_start: float, now: float) -> list[Effect]:
        old_epoch = self._takeover_view.state.epoch if self._takeover_view and self._takeover_view.state else 0
        self.role = Role.ACTIVE
        self.epoch = new.epoch
        self.highest_epoch_seen = max(self.highest_epoch_seen, new.epoch)
        self.lease_start = lease_start
        self.promise_from = None
        self.promise_made_at = None
        self.fenced = False
        self.taking_over = False
        self._takeover = None
        self.told_mode = (new.mode, new.async_from_lsn)  # BecomeActive carries it
        first_uid = new.reserved_uid - self.settings.reserve_uid + 1
        return [
            RecordEpoch(new.epoch),
            BecomeActive(
                epoch=new.epoch,
                previous_end=(old_epoch, self._takeover_e),
                first_uid=first_uid,
                uid_gap=uid_gap(first_uid - 1, self._status.used_uid),
                mode=new.mode,
                async_from_lsn=new.async_from_lsn,
            ),
        ]

    # ---- heartbeats (active asks, passive promises)

    def heartbeat_due(self, now: float, status: NodeStatus | None = None) -> HeartbeatRequest | None:
        if self.role is not Role.ACTIVE or now - self.last_heartbeat < self.settings.renew_interval / 2:
            return None
        status = status or self._status
        self.last_heartbeat = now
        hb_id = next(self._ids)
        self._sent[hb_id] = now
        for old in [k for k, t in self._sent.items() if now - t > self.settings.peer_promise]:
            del self._sent[old]
        store_ok = status.store_ok_at is not None and now - status.store_ok_at <= self.settings.renew_interval
        return HeartbeatRequest(
            hb_id,
            self.me,
            self.epoch,
            letting_go=self.fenced or not store_ok,
            last_promise_id=self.last_promise_id,
            stored_lsn=status.stored_lsn,
        )

    def on_heartbeat_request(self, req: HeartbeatRequest, now: float) -> HeartbeatReply:
        if req.epoch > self.highest_epoch_seen:
            self.highest_epoch_seen = req.epoch
            self._queued.append(RecordEpoch(req.epoch))
        promise = should_promise(self.role, self.taking_over, req.epoch, self.highest_epoch_seen, req.letting_go)
        if promise:
            self.promise_made_at = now  # counted from now, the reply's send time: later than the request's
        return HeartbeatReply(req.id, self.me, self.highest_epoch_seen, promise, self._status.stored_lsn)

    def on_heartbeat_reply(self, reply: HeartbeatReply, now: float) -> None:
        self.on_epoch_seen(reply.epoch)
        sent = self._sent.get(reply.id)
        if reply.promise and sent is not None and self.role is Role.ACTIVE and reply.epoch == self.epoch:
            if self.promise_from is None or sent > self.promise_from:
                self.promise_from = sent
                self.last_promise_id = reply.id
                if self.fenced and self.may_write(now):
                    self.fenced = False
                    self._queued.append(Unfence())

    def on_epoch_seen(self, epoch: int) -> None:
        """A newer epoch named by the peer on any connection: writing stops at once (may_write)."""
        if epoch > self.highest_epoch_seen:
            self.highest_epoch_seen = epoch
            self._queued.append(RecordEpoch(epoch))


# ---- the async driver for a running node


class NodeControl(Protocol):
    """What the node implements for the loop (the integration work of issue 13)."""

    def status(self) -> NodeStatus: ...
    def record_epoch(self, epoch: int) -> None: ...
    async def prepare_takeover(self) -> int: ...
    async def become_active(self, effect: BecomeActive) -> None: ...
    async def become_passive(self, effect: BecomePassive) -> None: ...
    async def resume_passive(self) -> None: ...
    async def fence(self, reason: str) -> None: ...
    async def unfence(self) -> None: ...
    async def mode_changed(self, mode: Mode, async_from_lsn: int | None) -> None: ...


class PeerLink(Protocol):
    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatReply:
        """Send one heartbeat and wait for its reply; raise on a timeout or a broken link."""
        ...


class ClusterLoop:
    """Runs an Agent against a real witness, peer link and node."""

    def __init__(
        self, agent: Agent, clock: Clock, witness: Witness, node: NodeControl, peer: PeerLink | None, tick: float = 0.1
    ) -> None:
        self.agent = agent
        self.clock = clock
        self.witness = witness
        self.node = node
        self.peer = peer
        self.tick_s = tick

    async def run(self) -> None:
        hb = asyncio.create_task(self._heartbeats()) if self.peer is not None else None
        try:
            while True:
                await self.tick()
                await self.clock.sleep(self.tick_s)
        finally:
            if hb is not None:
                hb.cancel()

    async def tick(self) -> None:
        await self._run_effects(self.agent.poll(self.clock.now(), self.node.status()))

    async def _run_effects(self, effects: list[Effect]) -> None:
        todo = list(effects)
        while todo:
            todo += await self._do(todo.pop(0))

    async def _do(self, e: Effect) -> list[Effect]:
        agent, node, clock = self.agent, self.node, self.clock
        if isinstance(e, ReadWitness):
            started = clock.now()
            try:
                state, token = await self.witness.read()
            except WitnessError as exc:
                log.warning("witness read failed: %s", exc)
                return agent.read_failed(clock.now())
            return agent.read_done(state, token, started, clock.now())
        if isinstance(e, WriteWitness):
            started = clock.now()  # the lease runs from here, the START of the attempt
            try:
                token = await self.witness.compare_and_swap(e.expected, e.new)
            except WitnessError as exc:
                log.warning("witness %s: outcome unknown: %s", e.purpose, exc)
                return agent.write_failed(e.purpose, started, clock.now())
            return agent.write_done(e.purpose, e.new, token, started, clock.now())
        if isinstance(e, PrepareTakeover):
            try:
                stored = await node.prepare_takeover()
            except Exception as exc:  # the receiver would not stop or the fsync failed: no takeover
                log.exception("%s: takeover preparation failed", agent.me)
                return agent.prepare_failed(clock.now(), f"takeover preparation failed: {exc}")
            return agent.prepared(stored, clock.now(), node.status())
        if isinstance(e, RecordEpoch):
            # Not caught: a node that cannot keep the epoch on disk must not act in it; the loop
            # stops and the node with it.
            node.record_epoch(e.epoch)
            return []
        try:
            await self._tell_node(e)
        except Exception:
            # The node failed to carry out a step. The agent's view stays as it is: a node that
            # cannot serve stops reporting a working store, so an active lets its lease go.
            log.exception("%s: %s failed", agent.me, type(e).__name__)
        return []

    async def _tell_node(self, e: Effect) -> None:
        agent, node = self.agent, self.node
        if isinstance(e, BecomeActive):
            log.warning("%s: active in epoch %d (previous end %s)", agent.me, e.epoch, e.previous_end)
            await node.become_active(e)
        elif isinstance(e, BecomePassive):
            log.warning("%s: passive in epoch %d, following %s", agent.me, e.epoch, e.holder)
            await node.become_passive(e)
        elif isinstance(e, ResumePassive):
            await node.resume_passive()
        elif isinstance(e, Fence):
            log.error("%s: fenced: %s", agent.me, e.reason)
            await node.fence(e.reason)
        elif isinstance(e, Unfence):
            await node.unfence()
        elif isinstance(e, ModeChanged):
            await node.mode_changed(e.mode, e.async_from_lsn)

    async def _heartbeats(self) -> None:
        assert self.peer is not None
        while True:
            req = self.agent.heartbeat_due(self.clock.now(), self.node.status())
            if req is not None:
                try:
                    reply = await asyncio.wait_for(self.peer.heartbeat(req), self.agent.settings.renew_interval)
                    self.agent.on_heartbeat_reply(reply, self.clock.now())
                except (TimeoutError, OSError, ConnectionError) as exc:
                    log.info("heartbeat %d to %s: %s", req.id, self.agent.peer, exc)
            await self.clock.sleep(self.agent.settings.renew_interval / 4)
