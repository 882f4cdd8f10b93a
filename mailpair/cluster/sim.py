"""A deterministic simulator of the pair: two cluster agents and a witness under seeded faults.

In the manner of FoundationDB's and TigerBeetle's simulation testing: the real `Agent` and
`decide()` run against a model of everything around them (clocks, network, witness, log, store),
all driven by one seeded random generator and one event queue, so a seed replays exactly:
`python -m mailpair.cluster.sim --seed N --trace` prints what happened. `--variant NAME` runs a
deliberately broken rule (VARIANTS), to show that the checks below catch it.

What is modelled, and why it is enough to break the rules if they are broken:
- Each node's clock runs at its own rate (a few percent off) from its own origin; agents only see
  their own clock. A paused node (SIGSTOP) handles nothing until it resumes, its clock running on.
  A crashed node loses everything but its fsync'd log and the highest epoch it kept; it restarts
  as passive.
- Messages (heartbeats, the log stream) take time, can be lost, and links can be cut in one
  direction. The witness is a compare-and-swap register reached over its own links, with slow
  I/O, lost replies and the client's timeout and read-back (Witness.compare_and_swap).
- The active writes records: it checks may_write before the group commit and after its fsync,
  respects its LSN and UID reservations (the witness's, or higher ones it sent in the stream and
  the passive acknowledged storing), waits for the passive in sync mode, and falls back to async
  (and back) through the witness as CLUSTER.md says. The passive stores what is shipped, refuses
  older epochs, and a rejoining node sets aside what diverged. A switchover drains, then hands
  the witness over.

Checked after every event (`Violation` names the seed and the rule):
- no acknowledgement by a node after another node's CAS raised the epoch above its own;
- never two nodes allowed to write at once;
- a fenced node acknowledges nothing;
- epochs only grow (witness, each node's kept epoch, each log);
- the mount dial is respected at every takeover (acknowledged records lost <= its limit);
- no MODSEQ and no UID is shown for two different records;
- two nodes never acknowledge writes in one epoch (DESIGN.md rule 3).
And at the end, once every fault has healed for a while, one node is active (liveness).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .decide import Action, Dial, DialKind, Observed, Role, Settings, decide, modseq, reserve_ahead
from .loop import (
    Agent,
    BecomeActive,
    BecomePassive,
    Effect,
    Fence,
    HeartbeatReply,
    HeartbeatRequest,
    ModeChanged,
    NodeStatus,
    PrepareTakeover,
    ReadWitness,
    RecordEpoch,
    ResumePassive,
    Unfence,
    WriteWitness,
)
from .witness import Token, WitnessState

WITNESS = "witness"
TICK = 0.25  # how often a node's loop wakes (its own clock)
WITNESS_TIMEOUT = 2.0
SYNC_STALL = 1.0  # a sync record waiting this long for the passive makes the active fall back


class Violation(AssertionError):
    def __init__(self, seed: int, rule: str, detail: str, trace: list[str], variant: str = "correct", scripted: str = "") -> None:
        self.seed, self.rule, self.detail, self.trace = seed, rule, detail, trace
        replay = f"python -m mailpair.cluster.sim --seed {seed} --trace"
        if variant != "correct":
            replay += f" --variant {variant}"
        if scripted:
            replay = f"Sim({seed}, faults={scripted}, trace=True).run()"
        super().__init__(f"seed {seed}: {rule}: {detail} (replay: {replay})")


@dataclass(frozen=True)
class Rec:
    epoch: int
    lsn: int
    uid_lo: int  # uid_lo..uid_hi assigned by this record (uid_hi < uid_lo: none)
    uid_hi: int
    rid: int  # what the record is: equal rid, equal content


@dataclass
class Fault:
    kind: str
    start: float
    end: float
    node: int = 0  # 0 or 1
    arg: float = 0.0


@dataclass
class Variant:
    """A deliberate break of a rule, to show the simulator catches it."""

    name: str = "correct"
    lease_anchor: str = "start"
    window_anchor: str = "returned"
    decide_fn: Callable[[Observed, float], Action] = decide
    margin: float | None = None
    skew: float = 0.03
    agent_dial: Dial | None = None  # the dial the agents use, when it differs from the one checked
    tamper: Callable[[SimNode, Effect], Effect] | None = None  # rewrites an effect before it is carried out
    own_reservations: bool = True  # a new active counts the reservations its copy stored


def _reuse_epoch(node: SimNode, e: Effect) -> Effect:
    """A takeover that keeps the old epoch number instead of raising it."""
    if isinstance(e, WriteWitness) and e.purpose == "promote" and e.new.epoch > 1:
        return dataclasses.replace(e, new=dataclasses.replace(e.new, epoch=e.new.epoch - 1))
    return e


def _uid_from_log(node: SimNode, e: Effect) -> Effect:
    """A new active that numbers UIDs on from its own log, ignoring the witness's reservation."""
    if isinstance(e, BecomeActive):
        return dataclasses.replace(e, first_uid=node.uid_hi() + 1)
    return e


def _ignore_promise(o: Observed, now: float) -> Action:
    return decide(dataclasses.replace(o, promise_made_at=None), now)


VARIANTS = {
    "correct": Variant(),
    "lease-from-end": Variant("lease-from-end", lease_anchor="end"),
    "window-from-issue": Variant("window-from-issue", window_anchor="issued"),
    "ignore-promise": Variant("ignore-promise", decide_fn=_ignore_promise),
    "ignore-dial": Variant("ignore-dial", agent_dial=Dial(DialKind.BEST, 10**9)),
    "no-margin": Variant("no-margin", margin=0.0, skew=0.05),
    "reuse-epoch": Variant("reuse-epoch", tamper=_reuse_epoch),
    "uid-from-log": Variant("uid-from-log", tamper=_uid_from_log),
    "ignore-stored-reservations": Variant("ignore-stored-reservations", own_reservations=False),
}


class SimNode:
    def __init__(self, sim: Sim, idx: int, name: str, peer: str, rate: float, offset: float) -> None:
        self.sim, self.idx, self.name, self.peer = sim, idx, name, peer
        self.rate, self.offset = rate, offset
        self.alive = True
        self.inc = 0  # incarnation: bumped at a crash, so old events and replies are dropped
        self.paused_until = 0.0
        self.log: list[Rec] = []
        self.kept_epoch = 0  # the highest epoch kept on disk
        self.set_aside: list[Rec] = []
        # Reservations the active raised through the stream (CLUSTER.md: past the witness's only
        # once this copy stored them): kept with the log, so they survive a crash.
        self.stored_res_epoch = 0
        self.stored_res_lsn = 0
        self.stored_res_uid = 0
        self.start()

    def local(self, t: float | None = None) -> float:
        return self.offset + self.rate * (self.sim.t if t is None else t)

    def start(self) -> None:
        sim = self.sim
        v = sim.variant
        self.agent = Agent(
            me=self.name,
            peer=self.peer,
            settings=sim.agent_settings,
            epoch=self.kept_epoch,
            started_at=self.local(),
            preferred=self.idx == 0,
            decide_fn=v.decide_fn,
            lease_anchor=v.lease_anchor,
            window_anchor=v.window_anchor,
        )
        self.fenced = False
        self.taking_over = False
        self.store_ok_at: float | None = None
        self.committing = False
        self.waiting: dict[int, tuple[Rec, float]] = {}  # sync: lsn -> (record, local time fsync'd)
        self.mode = "sync"
        self.want_mode = "sync"
        self.want_from: int | None = None
        self.peer_acked = 0
        self.acked_res_lsn = 0  # active: reservations the passive acknowledged storing, this epoch
        self.acked_res_uid = 0
        self.next_ship = 1
        self.op = 0  # the witness operation in flight (its generation)
        self.draining_since: float | None = None  # switchover asked: no new commits, waiting to hand over
        self.handover_issued = False
        self.last_epoch_seen_by_check = self.agent.epoch

    # ---- status for the agent

    def status(self) -> NodeStatus:
        end = len(self.log)
        used_uid = self.uid_hi()
        active = self.agent.role is Role.ACTIVE
        view = self.agent.view.state if self.agent.view is not None else None
        holder_epoch = view.epoch if view is not None else 0
        own = self.sim.variant.own_reservations
        return NodeStatus(
            own_reserved_lsn=self.stored_res_lsn if self.stored_res_epoch == holder_epoch and own else 0,
            own_reserved_uid=self.stored_res_uid if own else 0,
            stored_lsn=end,
            replayed_lsn=end,
            store_ok_at=self.store_ok_at,
            used_lsn=end,
            used_uid=used_uid,
            both_stored_lsn=min(end, self.peer_acked) if active else 0,
            want_mode=self.want_mode if active else "sync",
            want_async_from=self.want_from if active else None,
        )

    def uid_hi(self) -> int:
        """The highest UID in the log: each record's uid_hi is at least its predecessor's."""
        return self.log[-1].uid_hi if self.log else 0

    def may_write(self) -> bool:
        """The agent's answer: this node holds two votes now."""
        return self.alive and self.agent.may_write(self.local())

    def limits(self, st: WitnessState) -> tuple[int, int]:
        """The LSN and UID this active may not go past: the witness's, or higher ones its peer stored."""
        return max(st.reserved_lsn, self.acked_res_lsn), max(st.reserved_uid, self.acked_res_uid)

    def can_write(self) -> bool:
        """What the store asks before a commit and before answering: not fenced, and may write."""
        return not self.fenced and self.may_write()


class Sim:
    def __init__(
        self,
        seed: int,
        variant: Variant | None = None,
        *,
        mode: str = "",
        dial: str = "",
        faults: list[Fault] | None = None,
        trace: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.variant = v = variant or VARIANTS["correct"]
        mode = mode or rng.choice(["sync", "sync", "async"])
        dial = dial or rng.choice(["lossless", "lossless", "good", "best"])
        settings = Settings(mode=mode, dial=Dial.parse(dial, good_limit=40, best_limit=400), reserve_lsn=30, reserve_uid=60)
        if v.margin is not None:
            settings = dataclasses.replace(settings, margin=v.margin)
        self.settings = settings
        self.agent_settings = dataclasses.replace(settings, dial=v.agent_dial) if v.agent_dial else settings
        self.t = 0.0
        self.q: list[tuple[float, int, Callable[..., None], tuple]] = []
        self.seq = 0
        self.tracing = trace
        self.trace: list[str] = []
        self.w_state: WitnessState | None = None
        self.w_rev = 0
        self.rid = 0
        self.events = 0
        self.acks = 0
        self.takeovers = 0
        self.acked: dict[int, Rec] = {}
        self.epoch_owner: dict[int, str] = {}
        self.w_history: list[tuple[float, WitnessState]] = []
        self.ack_times: dict[int, float] = {}  # rid -> when acknowledged
        self.history: list[tuple[float, str, str, int]] = []  # (t, what, node, epoch): active, passive, fence, cas
        self.acks_by: dict[tuple[str, int], list[float]] = {}  # (node, epoch) -> [count, first t, last t]
        self.lost: set[int] = set()
        self.modseq_of: dict[int, int] = {}
        self.uid_of: dict[int, int] = {}
        self.scripted = repr(faults) if faults is not None else ""
        self.faults = self._schedule() if faults is None else [dataclasses.replace(f) for f in faults]
        self.heal = max((f.end for f in self.faults), default=0.0)
        self.end = max(self.heal, 10.0) + 15.0
        names = ["node1", "node2"]
        self.nodes = [
            SimNode(self, i, names[i], names[1 - i], rate=1 + rng.uniform(-v.skew, v.skew), offset=rng.uniform(0, 1000))
            for i in range(2)
        ]
        for n in self.nodes:
            self.at(rng.uniform(0, TICK), self._tick, n, n.inc)
        self.log(f"mode {mode} dial {dial} rates {[round(n.rate, 4) for n in self.nodes]} faults {self.faults}")

    # ---- the schedule

    def _schedule(self) -> list[Fault]:
        rng = self.rng
        kinds = [
            "crash",
            "pause",
            "cut",
            "cut1",
            "wcut",
            "wcut-up",
            "wcut-down",
            "wslow",
            "wslow",
            "delay",
            "wedge",
            "slowdisk",
            "loss",
            "switchover",
        ]
        faults = []
        for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 5])):
            start = round(rng.uniform(1.0, 12.0), 3)
            end = round(start + rng.uniform(0.2, 8.0), 3)
            kind = rng.choice(kinds)
            # Two in three faults hit whichever node is active when they start (-1, resolved then).
            node = -1 if rng.random() < 0.67 else rng.randrange(2)
            arg = rng.uniform(0.3, 2.5)
            if rng.random() < 0.15:  # cut off from both the witness and the peer
                faults.append(Fault("wcut", start, end, node, arg))
                kind = "cut"
            faults.append(Fault(kind, start, end, node, arg))
        return faults

    def _aim(self, f: Fault) -> None:
        if f.node == -1:
            active = [n.idx for n in self.nodes if n.may_write()]
            f.node = active[0] if active else self.rng.randrange(2)
            if f.kind == "wslow":
                f.node = 1 - f.node  # a slow share on the passive's side: its reads return late
            self.log(f"fault {f.kind} until {f.end:.3f} aimed at {self.nodes[f.node].name}")

    def active_faults(self, kind: str, node: int | None = None) -> list[Fault]:
        return [
            f
            for f in self.faults
            if f.kind == kind and f.start <= self.t < f.end and f.node >= 0 and (node is None or f.node == node)
        ]

    # ---- the event queue

    def at(self, t: float, fn: Callable[..., None], *args) -> None:
        self.seq += 1
        heapq.heappush(self.q, (t, self.seq, fn, args))

    def log(self, text: str) -> None:
        if self.tracing:
            self.trace.append(f"{self.t:8.3f} {text}")

    def fail(self, rule: str, detail: str) -> None:
        raise Violation(self.seed, rule, detail, self.trace, self.variant.name, self.scripted)

    def run(self) -> Sim:
        for f in self.faults:
            if f.node == -1:
                self.at(f.start, self._aim, f)
            if f.kind == "crash":
                self.at(f.start, self._crash, f)
                self.at(f.end, self._restart, f)
            elif f.kind == "pause":
                self.at(f.start, self._pause, f)
            elif f.kind == "switchover":
                self.at(f.start, self._switchover, f)
        while self.q:
            t, _, fn, args = heapq.heappop(self.q)
            if t > self.end:
                break
            self.t = t
            fn(*args)
            self.events += 1
            self._check()
        self._check_liveness()
        return self

    def _node_event(self, node: SimNode, inc: int) -> bool:
        """Whether an event for node may run now; a paused node's events wait for it."""
        if not node.alive or node.inc != inc:
            return False
        if node.paused_until > self.t:
            return False
        return True

    def deliver(self, node: SimNode, inc: int, fn: Callable[..., None], *args) -> None:
        if node.alive and node.inc == inc and node.paused_until > self.t:
            self.at(node.paused_until, self.deliver, node, inc, fn, *args)
            return
        if self._node_event(node, inc):
            fn(*args)

    # ---- network

    def link_up(self, src: str, dst: str) -> bool:
        for f in self.faults:
            if not f.start <= self.t < f.end or f.node < 0:
                continue
            a = self.nodes[f.node].name
            b = self.nodes[1 - f.node].name
            if f.kind == "cut" and {src, dst} == {a, b}:
                return False
            if f.kind == "cut1" and (src, dst) == (a, b):
                return False
            if f.kind == "wcut" and {src, dst} == {a, WITNESS}:
                return False
            if f.kind == "wcut-up" and (src, dst) == (a, WITNESS):
                return False
            if f.kind == "wcut-down" and (src, dst) == (WITNESS, a):
                return False
        return True

    def latency(self, src: str, dst: str) -> float | None:
        if not self.link_up(src, dst):
            return None
        loss = 0.01 + (0.3 if self.active_faults("loss") else 0.0)
        if self.rng.random() < loss:
            return None
        d = self.rng.uniform(0.0005, 0.005)
        for f in self.active_faults("delay"):
            d += self.rng.uniform(0, f.arg)
        return d

    def send(self, src: SimNode, dst: SimNode, fn: Callable[..., None], *args) -> None:
        d = self.latency(src.name, dst.name)
        if d is not None:
            self.at(self.t + d, self.deliver, dst, dst.inc, fn, *args)

    # ---- faults

    def _crash(self, f: Fault) -> None:
        node = self.nodes[f.node]
        self.log(f"{node.name} crashes")
        node.alive = False
        node.inc += 1

    def _restart(self, f: Fault) -> None:
        node = self.nodes[f.node]
        if node.alive:
            return  # a second crash fault on a node already back
        node.alive = True
        node.paused_until = 0.0
        node.start()
        self.log(f"{node.name} restarts, kept epoch {node.kept_epoch}, log {len(node.log)}")
        self.at(self.t + self.rng.uniform(0, TICK), self._tick, node, node.inc)

    def _pause(self, f: Fault) -> None:
        node, until = self.nodes[f.node], f.end
        if node.alive:
            self.log(f"{node.name} paused until {until:.3f}")
            node.paused_until = until

    def _switchover(self, f: Fault) -> None:
        node = self.nodes[f.node]
        if node.alive and node.agent.role is Role.ACTIVE:
            self.log(f"switchover asked of {node.name}")
            self.history.append((self.t, "switchover", node.name, node.agent.epoch))
            node.draining_since = self.t
            node.handover_issued = False

    # ---- a node's loop tick

    def _tick(self, node: SimNode, inc: int) -> None:
        if not node.alive or node.inc != inc:
            return
        if node.paused_until > self.t:
            self.at(node.paused_until, self._tick, node, inc)
            return
        self.at(self.t + TICK / node.rate, self._tick, node, inc)
        now = node.local()
        if not self.active_faults("wedge", node.idx):
            node.store_ok_at = now  # the canary
        self._run(node, node.agent.poll(now, node.status()))
        req = node.agent.heartbeat_due(now, node.status())
        if req is not None:
            self.send(node, self.other(node), self._on_heartbeat, self.other(node), req, node, node.inc)
        if node.agent.role is Role.ACTIVE:
            self._active_work(node, now)

    def other(self, node: SimNode) -> SimNode:
        return self.nodes[1 - node.idx]

    def _run(self, node: SimNode, effects: list[Effect]) -> None:
        todo = list(effects)
        while todo:
            e = todo.pop(0)
            todo += self._effect(node, e)

    def _effect(self, node: SimNode, e: Effect) -> list[Effect]:
        agent = node.agent
        if self.variant.tamper is not None:
            e = self.variant.tamper(node, e)
        if isinstance(e, ReadWitness):
            self._witness_op(node, "read", None)
        elif isinstance(e, WriteWitness):
            self._witness_op(node, e.purpose, e)
        elif isinstance(e, PrepareTakeover):
            node.taking_over = True  # the receiver stops; what is stored is durable already
            return agent.prepared(len(node.log), node.local(), node.status())
        elif isinstance(e, RecordEpoch):
            if e.epoch < node.kept_epoch:
                self.fail("epochs only grow", f"{node.name} asked to keep epoch {e.epoch} below {node.kept_epoch}")
            node.kept_epoch = e.epoch
        elif isinstance(e, BecomeActive):
            self._become_active(node, e)
        elif isinstance(e, BecomePassive):
            self.log(f"{node.name} passive in epoch {e.epoch} (holder {e.holder})")
            node.draining_since = None
            self.history.append((self.t, "passive", node.name, e.epoch))
            node.taking_over = False
            node.fenced = False
            node.waiting.clear()  # unanswered: those clients get an error, the records are in the log
        elif isinstance(e, ResumePassive):
            node.taking_over = False
        elif isinstance(e, Fence):
            self.log(f"{node.name} fenced: {e.reason}")
            self.history.append((self.t, "fence", node.name, agent.epoch))
            node.fenced = True
        elif isinstance(e, Unfence):
            self.log(f"{node.name} unfenced")
            node.fenced = False
        elif isinstance(e, ModeChanged):
            self.log(f"{node.name} witness mode {e.mode} from {e.async_from_lsn}")
            node.mode = e.mode
            if e.mode == "async":
                self._release_waiting(node, everything=True)
        return []

    # ---- the witness

    def _witness_op(self, node: SimNode, kind: str, write: WriteWitness | None) -> None:
        node.op += 1
        op = node.op
        started = node.local()
        self.at(
            self.t + WITNESS_TIMEOUT / node.rate,
            self.deliver,
            node,
            node.inc,
            self._witness_timeout,
            node,
            op,
            kind,
            write,
            started,
        )
        self._witness_send(node, op, kind, write, started, readback=False)

    def _witness_send(
        self, node: SimNode, op: int, kind: str, write: WriteWitness | None, started: float, readback: bool
    ) -> None:
        up = self.latency(node.name, WITNESS)
        if up is None:
            return
        io = sum(self.rng.uniform(0, f.arg) for f in self.active_faults("wslow", node.idx)) + self.rng.uniform(0.0005, 0.003)
        self.at(self.t + up + io, self._witness_apply, node, node.inc, op, kind, write, started, readback)

    def _witness_apply(
        self, node: SimNode, inc: int, op: int, kind: str, write: WriteWitness | None, started: float, readback: bool
    ) -> None:
        # The witness acts whatever became of the node since it asked.
        if write is not None and not readback:
            if write.expected.value == self.w_rev:
                old = self.w_state
                if old is not None and write.new.epoch < old.epoch:
                    self.fail("epochs only grow", f"witness epoch {old.epoch} -> {write.new.epoch}")
                self.w_rev += 1
                self.w_state = write.new
                self.w_history.append((self.t, write.new))
                self.log(f"witness rev {self.w_rev}: {write.purpose} by {node.name} epoch {write.new.epoch} v{write.new.version}")
                if old is None or write.new.epoch > old.epoch:
                    self.history.append((self.t, "cas", node.name, write.new.epoch))
                result: tuple = (Token(self.w_rev),)
            else:
                result = (None,)
        else:
            result = (self.w_state, Token(self.w_rev))
        down = self.latency(WITNESS, node.name)
        if down is not None:
            self.at(self.t + down, self.deliver, node, inc, self._witness_reply, node, op, kind, write, started, readback, result)

    def _witness_reply(
        self, node: SimNode, op: int, kind: str, write: WriteWitness | None, started: float, readback: bool, result: tuple
    ) -> None:
        if op != node.op:
            return  # timed out already
        node.op += 1  # this operation is over
        agent, now = node.agent, node.local()
        if write is None:
            state, token = result
            self._run(node, agent.read_done(state, token, started, now))
        elif not readback:
            if kind == "handover" and result[0] is not None:
                self.send(node, self.other(node), self._handover_notice, self.other(node))
            self._run(node, agent.write_done(kind, write.new, result[0], started, now))
        else:
            state, token = result
            ours = token if state is not None and state.nonce == write.new.nonce else None
            self._run(node, agent.write_done(kind, write.new, ours, started, now))

    def _witness_timeout(self, node: SimNode, op: int, kind: str, write: WriteWitness | None, started: float) -> None:
        if op != node.op:
            return
        if write is None:
            node.op += 1
            self._run(node, node.agent.read_failed(node.local()))
            return
        # The write's outcome is unknown: read back and match the nonce, within one more timeout.
        node.op += 1
        op = node.op
        self.at(
            self.t + WITNESS_TIMEOUT / node.rate, self.deliver, node, node.inc, self._readback_timeout, node, op, kind, started
        )
        self._witness_send(node, op, kind, write, started, readback=True)

    def _readback_timeout(self, node: SimNode, op: int, kind: str, started: float) -> None:
        if op != node.op:
            return
        node.op += 1
        self._run(node, node.agent.write_failed(kind, started, node.local()))

    # ---- heartbeats

    def _on_heartbeat(self, node: SimNode, req: HeartbeatRequest, sender: SimNode, sender_inc: int) -> None:
        reply = node.agent.on_heartbeat_request(req, node.local())
        self.send(node, sender, self._on_heartbeat_reply, sender, reply, sender_inc)

    def _on_heartbeat_reply(self, node: SimNode, reply: HeartbeatReply, inc: int) -> None:
        if node.inc != inc:
            return
        node.agent.on_heartbeat_reply(reply, node.local())

    # ---- the active's writes and the stream

    def _active_work(self, node: SimNode, now: float) -> None:
        agent = node.agent
        st = agent.view.state if agent.view is not None else None
        if st is None:
            return
        # Sync fallback: a record waiting too long for the passive asks the witness for async mode.
        if node.waiting and node.want_mode == "sync":
            oldest = min(node.waiting)
            if now - node.waiting[oldest][1] > SYNC_STALL:
                node.want_mode, node.want_from = "async", oldest
        elif (
            node.mode == "async"
            and node.want_mode == "async"
            and self.settings.mode == "sync"
            and node.peer_acked >= len(node.log)
        ):
            node.want_mode, node.want_from = "sync", None  # from now on every record waits for the passive
        if node.draining_since is not None:
            self._drain(node, now)
        elif not node.committing and self.rng.random() < 0.8 and not self.active_faults("wedge", node.idx):
            self._commit(node, st)
        self._ship(node)

    def _drain(self, node: SimNode, now: float) -> None:
        """Switchover: no new commits; once the peer stored everything, hand the witness over."""
        agent = node.agent
        if node.handover_issued:
            if agent.handing_over:
                return
            node.handover_issued = False  # it did not land (and writing resumed): try again
        if agent.handing_over:
            return
        if self.t - node.draining_since > 5.0:
            node.draining_since = None  # the peer did not catch up: the switchover fails, loudly
            self.log(f"switchover by {node.name} abandoned")
            return
        if node.committing or node.waiting or node.peer_acked < len(node.log):
            return
        effects = agent.start_handover(now, node.status())
        if effects:
            node.handover_issued = True
            self._run(node, effects)

    def _handover_notice(self, node: SimNode) -> None:
        node.agent.request_read()

    def _commit(self, node: SimNode, st: WitnessState) -> None:
        if not node.can_write():
            return
        lsn = len(node.log) + 1
        k = self.rng.choice([0, 1, 1, 2, 5])
        hi = node.uid_hi()
        max_lsn, max_uid = node.limits(st)
        if lsn > max_lsn or hi + k > max_uid:
            return  # waits for a renew or the stream to raise the reservation
        self.rid += 1
        rec = Rec(node.agent.epoch, lsn, hi + 1, hi + k, self.rid)
        node.committing = True
        d = self.rng.uniform(0.001, 0.02) + sum(self.rng.uniform(0, f.arg) for f in self.active_faults("slowdisk", node.idx))
        self.at(self.t + d, self.deliver, node, node.inc, self._fsynced, node, rec)

    def _fsynced(self, node: SimNode, rec: Rec) -> None:
        node.committing = False
        if rec.lsn != len(node.log) + 1:
            return  # the node was demoted and rejoined meanwhile; the write failed
        if rec.epoch < node.kept_epoch:
            # A group commit begun before a demotion ends after it: the store refuses a record of
            # an epoch lower than one it has seen start (rule 3); its client gets an error.
            return
        if node.log and node.log[-1].epoch > rec.epoch:
            self.fail("epochs only grow", f"{node.name} appends epoch {rec.epoch} after {node.log[-1].epoch}")
        node.log.append(rec)
        node.store_ok_at = node.local()
        if not node.can_write():
            return  # its fsync crossed the deadline: answered NO, the record stays (rejoin sets it aside)
        if node.mode == "sync" or node.want_mode == "sync":
            node.waiting[rec.lsn] = (rec, node.local())
        else:
            self._ack(node, rec)

    def _release_waiting(self, node: SimNode, everything: bool = False) -> None:
        for lsn in sorted(node.waiting):
            if everything or lsn <= node.peer_acked:
                rec, _ = node.waiting.pop(lsn)
                if node.can_write():
                    self._ack(node, rec)

    def _ship(self, node: SimNode) -> None:
        peer = self.other(node)
        start = max(1, min(node.next_ship, len(node.log) + 1))
        recs = node.log[start - 1 : start - 1 + 40]
        prev = node.log[start - 2] if start >= 2 else None
        res = (0, 0)
        st = node.agent.view.state if node.agent.view is not None else None
        if st is not None:
            max_lsn, max_uid = node.limits(st)
            s = self.settings
            res = (reserve_ahead(len(node.log), max_lsn, s.reserve_lsn), reserve_ahead(node.uid_hi(), max_uid, s.reserve_uid))
        self.send(node, peer, self._on_records, peer, node, node.inc, node.agent.epoch, prev, recs, res)

    def _on_records(
        self, node: SimNode, sender: SimNode, sender_inc: int, epoch: int, prev: Rec | None, recs: list[Rec], res: tuple[int, int]
    ) -> None:
        agent = node.agent
        if epoch < agent.highest_epoch_seen or agent.role is Role.ACTIVE:
            if epoch > agent.epoch:
                agent.on_epoch_seen(epoch)
            self.send(node, sender, self._on_stream_reply, sender, sender_inc, agent.highest_epoch_seen, None, False, None)
            return
        if node.taking_over:
            return  # the receiver is stopped: E is fixed
        agent.on_epoch_seen(epoch)
        if prev is not None and (len(node.log) < prev.lsn or node.log[prev.lsn - 1].rid != prev.rid):
            self.send(node, sender, self._on_stream_reply, sender, sender_inc, agent.highest_epoch_seen, prev.lsn, False, None)
            return
        for r in recs:
            if r.lsn <= len(node.log):
                if node.log[r.lsn - 1].rid == r.rid:
                    continue
                node.set_aside += node.log[r.lsn - 1 :]  # diverged: kept aside, never replayed
                del node.log[r.lsn - 1 :]
            if r.epoch < (node.log[-1].epoch if node.log else 0):
                self.fail("epochs only grow", f"{node.name} stores epoch {r.epoch} after {node.log[-1].epoch}")
            node.log.append(r)
        if epoch > node.stored_res_epoch:
            node.stored_res_epoch, node.stored_res_lsn = epoch, 0
        if epoch == node.stored_res_epoch:
            node.stored_res_lsn = max(node.stored_res_lsn, res[0])
        node.stored_res_uid = max(node.stored_res_uid, res[1])  # stored with the records (fsync'd together)
        stored = (node.stored_res_lsn, node.stored_res_uid) if epoch == node.stored_res_epoch else None
        self.send(node, sender, self._on_stream_reply, sender, sender_inc, agent.highest_epoch_seen, len(node.log), True, stored)

    def _on_stream_reply(
        self, node: SimNode, inc: int, epoch: int, lsn: int | None, ok: bool, res: tuple[int, int] | None
    ) -> None:
        if node.inc != inc:
            return
        node.agent.on_epoch_seen(epoch)
        if node.agent.role is not Role.ACTIVE or epoch > node.agent.epoch:
            return
        if not ok:
            if lsn is not None:  # the passive's log differs before prev: step back
                node.next_ship = max(1, lsn - 20)
            return
        node.next_ship = lsn + 1
        node.peer_acked = max(node.peer_acked, lsn) if lsn <= len(node.log) else node.peer_acked
        if res is not None and epoch == node.agent.epoch:
            node.acked_res_lsn = max(node.acked_res_lsn, res[0])
            node.acked_res_uid = max(node.acked_res_uid, res[1])
        self._release_waiting(node)

    def _become_active(self, node: SimNode, e: BecomeActive) -> None:
        self.takeovers += 1
        self.history.append((self.t, "active", node.name, e.epoch))
        self.log(f"{node.name} ACTIVE in epoch {e.epoch} previous end {e.previous_end} first uid {e.first_uid}")
        # The dial: acknowledged records the new active lacks are lost by this takeover.
        have = {r.rid for r in node.log}
        missing = {rid for rid in self.acked if rid not in have and rid not in self.lost}
        limit = self.settings.dial.limit
        if len(missing) > limit:
            self.fail(
                "the dial is respected",
                f"{node.name} took over epoch {e.epoch} missing {len(missing)} acknowledged records, dial {self.settings.dial.kind.value} allows {limit}",
            )
        self.lost |= missing
        node.mode = e.mode
        node.want_mode = e.mode
        node.want_from = e.async_from_lsn
        node.peer_acked = 0
        node.acked_res_lsn = node.acked_res_uid = 0
        node.next_ship = len(node.log) + 1
        node.waiting.clear()
        node.taking_over = False
        node.fenced = False
        # The epoch record, then every record it holds is shown to clients under the new active.
        self.rid += 1
        uid_hi = node.uid_hi()
        node.log.append(Rec(e.epoch, len(node.log) + 1, e.first_uid, max(uid_hi, e.first_uid - 1), self.rid))
        for r in node.log:
            self._show(node, r)

    # ---- acknowledgements and the invariants

    def _ack(self, node: SimNode, rec: Rec) -> None:
        if node.fenced or not node.may_write():
            self.fail(
                "a fenced node acknowledges nothing", f"{node.name} acknowledged LSN {rec.lsn} while fenced or past its deadline"
            )
        w = self.w_state
        if w is not None and w.epoch > rec.epoch:
            self.fail(
                "no acknowledgement after another node's epoch CAS",
                f"{node.name} acknowledged epoch {rec.epoch} LSN {rec.lsn} after the witness reached epoch {w.epoch}",
            )
        owner = self.epoch_owner.setdefault(rec.epoch, node.name)
        if owner != node.name:
            self.fail(
                "two nodes never accept writes in one epoch", f"{node.name} and {owner} both acknowledged in epoch {rec.epoch}"
            )
        self.acks += 1
        self.acked[rec.rid] = rec
        self.ack_times[rec.rid] = self.t
        by = self.acks_by.setdefault((node.name, rec.epoch), [0, self.t, self.t])
        by[0] += 1
        by[2] = self.t
        self._show(node, rec)

    def _show(self, node: SimNode, rec: Rec) -> None:
        m = modseq(rec.epoch, rec.lsn)
        if self.modseq_of.setdefault(m, rec.rid) != rec.rid:
            self.fail(
                "no MODSEQ shown for two things",
                f"MODSEQ {m} (epoch {rec.epoch} LSN {rec.lsn}) shown by {node.name} for two records",
            )
        for uid in range(rec.uid_lo, rec.uid_hi + 1):
            if self.uid_of.setdefault(uid, rec.rid) != rec.rid:
                self.fail("no UID shown for two things", f"UID {uid} shown by {node.name} for two records")

    def _check(self) -> None:
        writers = [n.name for n in self.nodes if n.may_write()]
        if len(writers) > 1:
            self.fail("never two nodes allowed to write at once", f"{writers} at t={self.t:.3f}")
        for n in self.nodes:
            e = n.agent.epoch
            if n.alive and e < n.last_epoch_seen_by_check and n.agent.role is Role.ACTIVE:
                self.fail("epochs only grow", f"{n.name} active in epoch {e} after {n.last_epoch_seen_by_check}")
            n.last_epoch_seen_by_check = max(n.last_epoch_seen_by_check, e)

    def _check_liveness(self) -> None:
        if self.end - self.heal < 15.0:
            return
        if not any(n.may_write() for n in self.nodes):
            why = {n.name: n.agent.last_action.reason if n.agent.last_action else "-" for n in self.nodes}
            self.fail("liveness", f"no node active {self.end - self.heal:.0f} s after the last fault healed: {why}")


@dataclass
class Summary:
    schedules: int = 0
    seconds: float = 0.0
    events: int = 0
    acks: int = 0
    takeovers: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return self.schedules / self.seconds * 60 if self.seconds else math.inf


def run_many(seeds: range, variant: Variant | None = None, stop_at_first: bool = True) -> Summary:
    out = Summary()
    t0 = time.perf_counter()
    for seed in seeds:
        try:
            sim = Sim(seed, variant).run()
            out.events += sim.events
            out.acks += sim.acks
            out.takeovers += sim.takeovers
        except Violation as v:
            out.violations.append(v)
            if stop_at_first:
                out.schedules += 1
                break
        out.schedules += 1
    out.seconds = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run the pair's deterministic simulator")
    p.add_argument("--seed", type=int, default=None, help="replay one schedule")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--variant", default="correct", choices=sorted(VARIANTS))
    p.add_argument("--trace", action="store_true")
    a = p.parse_args(argv)
    variant = VARIANTS[a.variant]
    if a.seed is not None:
        sim = Sim(a.seed, variant, trace=True)
        try:
            sim.run()
            result = f"seed {a.seed}: ok, {sim.acks} acknowledged, {sim.takeovers} activations"
        except Violation as v:
            result = str(v)
        if a.trace:
            print("\n".join(sim.trace))
        print(result)
        return 0 if result.endswith("activations") else 1
    s = run_many(range(a.first, a.first + a.count), variant)
    for v in s.violations:
        print(v)
    print(
        f"{s.schedules} schedules in {s.seconds:.1f} s ({s.per_minute:.0f}/min), {s.events} events, {s.acks} acks, {s.takeovers} activations"
    )
    return 1 if s.violations else 0


if __name__ == "__main__":
    sys.exit(main())
