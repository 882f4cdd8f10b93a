"""decide() and its rules, row by row of CLUSTER.md's table and anchor by anchor."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mailpair.cluster.decide import (
    Dial,
    DialKind,
    Kind,
    Observed,
    Role,
    Settings,
    WitnessView,
    decide,
    dial_allows,
    first_uid_after_takeover,
    may_write_until,
    modseq,
    reserve_ahead,
    should_promise,
    uid_gap,
)
from mailpair.cluster.loop import Agent, HeartbeatRequest, NodeStatus, WriteWitness
from mailpair.cluster.witness import Token, WitnessState

S = Settings()  # renew 1, ttl 3, promise 3, margin 0.5
T = 1000.0  # "now" in these tests
HELD = WitnessState(epoch=3, holder="node1", version=40, nonce="n40", reserved_lsn=500, reserved_uid=900, both_stored_lsn=450)


def active(**kw) -> Observed:
    base = dict(me="node1", peer="node2", role=Role.ACTIVE, epoch=3, highest_epoch_seen=3, settings=S, store_ok_at=T - 0.1)
    base.update(kw)
    base.setdefault("witness", WitnessView(HELD, Token(40), changed_at=T - 0.5, read_at=T - 0.5))
    return Observed(**base)


def passive(changed_ago: float, promised_ago: float | None, state: WitnessState = HELD, **kw) -> Observed:
    base = dict(
        me="node2",
        peer="node1",
        role=Role.PASSIVE,
        epoch=3,
        highest_epoch_seen=3,
        settings=S,
        witness=WitnessView(state, Token(state.version), changed_at=T - changed_ago, read_at=T - 0.2),
        promise_made_at=None if promised_ago is None else T - promised_ago,
        stored_lsn=480,
    )
    base.update(kw)
    return Observed(**base)


# ---- the table, row by row


def test_link_between_nodes_lost_active_keeps_writing_on_the_lease_passive_waits():
    a = active(lease_start=T - 0.9, promise_from=None)
    assert decide(a, T).kind is Kind.WAIT and T < may_write_until(a.lease_start, None, S)
    assert decide(a, T + 0.2).kind is Kind.RENEW
    # B's promise lapsed long ago (no requests arrive), but the witness version keeps changing
    b = passive(changed_ago=0.7, promised_ago=30)
    d = decide(b, T)
    assert d.kind is Kind.WAIT and d.reason.startswith("lease held by node1 until +")


def test_witness_lost_active_writes_on_the_promise_and_passive_cannot_take_over():
    a = active(lease_start=T - 6, promise_from=T - 0.4)
    assert T < may_write_until(a.lease_start, a.promise_from, S)
    d = decide(a, T)
    assert d.kind is Kind.RENEW  # it keeps trying the witness; no fence
    assert d.reason == "witness lease lapsed: writing on node2's promise until +2.1 s, renewing"
    # B watched the witness unchanged for long, but it promised A 0.3 s ago
    b = passive(changed_ago=20, promised_ago=0.3)
    d = decide(b, T)
    assert d.kind is Kind.WAIT and d.reason == "promised node1 not to take over until +2.7 s"


def test_active_machine_gone_passive_takes_over_when_both_promises_lapsed():
    assert decide(passive(changed_ago=3.6, promised_ago=3.1), T).kind is Kind.PROMOTE
    assert decide(passive(changed_ago=3.4, promised_ago=3.1), T).kind is Kind.WAIT  # lease + margin not yet
    assert decide(passive(changed_ago=3.6, promised_ago=2.9), T).kind is Kind.WAIT  # its promise not yet
    d = decide(passive(changed_ago=3.6, promised_ago=3.1), T)
    assert d.epoch == 4 and "lease of node1 lapsed" in d.reason


def test_active_cut_off_from_both_fences_before_the_passive_may_take_over():
    s = T - 10  # A's last renew started at s, the last promise it got answered a request sent at s
    a = active(lease_start=s, promise_from=s)
    deadline = may_write_until(s, s, S)
    assert deadline == s + 2.5
    assert decide(a, deadline - 0.01).kind is not Kind.FENCE
    assert decide(a, deadline).kind is Kind.FENCE
    # B: its read showing that version cannot have returned before s; its last promise not before s
    b_at = lambda now: decide(passive(changed_ago=T - s, promised_ago=T - s), now)  # noqa: E731
    assert b_at(T - (T - s) + 3.49).kind is Kind.WAIT
    assert b_at(s + 3.5).kind is Kind.PROMOTE
    assert s + 3.5 - deadline == 2 * S.margin  # the gap the margin buys against clock-rate drift


def test_fenced_active_keeps_trying_to_renew_and_paused_active_wakes_fenced():
    a = active(lease_start=T - 9, promise_from=T - 9)
    assert decide(a, T).kind is Kind.FENCE
    assert decide(dataclasses.replace(a, fenced=True), T).kind is Kind.RENEW


def test_paused_active_learns_the_new_epoch_and_demotes():
    newer = HELD.successor(epoch=4, holder="node2")
    a = active(lease_start=T - 9, fenced=True, witness=WitnessView(newer, Token(41), T, T))
    d = decide(a, T)
    assert d.kind is Kind.DEMOTE and d.epoch == 4 and d.holder == "node2"
    # and a "newer epoch" answer from the peer, before any witness read, demotes it too
    d = decide(active(lease_start=T - 0.5, highest_epoch_seen=4), T)
    assert d.kind is Kind.DEMOTE and d.epoch == 4


def test_only_b_to_a_lost_b_stops_promising_to_a_fenced_active_and_takes_over():
    # A's requests arrive saying it is fenced (it gets no replies, has no lease): B does not promise
    assert not should_promise(Role.PASSIVE, False, 3, 3, letting_go=True)
    assert should_promise(Role.PASSIVE, False, 3, 3, letting_go=False)
    # so B's last promise lapses and it takes over once the lease lapsed as well
    assert decide(passive(changed_ago=3.6, promised_ago=3.05), T).kind is Kind.PROMOTE


def test_promises_only_from_a_passive_not_taking_over_to_a_current_epoch():
    assert not should_promise(Role.PASSIVE, True, 3, 3, False)
    assert not should_promise(Role.ACTIVE, False, 3, 3, False)
    assert not should_promise(Role.PASSIVE, False, 2, 3, False)


# ---- the timing anchors, through the agent that records them


def agent(role=Role.ACTIVE) -> Agent:
    """node1 as active (the witness holder), node2 as passive."""
    me, peer = ("node1", "node2") if role is Role.ACTIVE else ("node2", "node1")
    a = Agent(me=me, peer=peer, settings=S, epoch=3, started_at=T - 100)
    a.role = role
    return a


def test_lease_runs_from_the_start_of_the_renew_attempt_not_its_end():
    a = agent()
    a.view = WitnessView(HELD, Token(40), T - 1, T - 1)
    a.need_read = False
    effects = a.poll(T, NodeStatus(store_ok_at=T))
    (write,) = [e for e in effects if isinstance(e, WriteWitness)]
    a.write_done("renew", write.new, Token(41), started_at=T, now=T + 2.0)  # a slow share: 2 s
    assert a.lease_start == T
    assert a.write_deadline() == T + 2.5
    assert a.may_write(T + 2.49) and not a.may_write(T + 2.5)


def test_observation_window_starts_when_the_read_returned():
    b = agent(Role.PASSIVE)
    b.promise_made_at = None
    b.read_done(HELD, Token(40), issued_at=T, returned_at=T + 2.0)
    assert b.view.changed_at == T + 2.0
    # the same version read again later does not move the window
    b.read_done(HELD, Token(40), issued_at=T + 3, returned_at=T + 3.1)
    assert b.view.changed_at == T + 2.0 and b.view.read_at == T + 3.1
    obs = b.observed(NodeStatus(stored_lsn=480))
    assert decide(obs, T + 2.0 + 3.49).kind is Kind.WAIT
    assert decide(obs, T + 2.0 + 3.5).kind is Kind.PROMOTE


def test_peer_promise_counts_from_when_the_request_was_sent_and_b_from_its_reply():
    a = agent()
    req = a.heartbeat_due(T, NodeStatus(store_ok_at=T))
    assert isinstance(req, HeartbeatRequest) and not req.letting_go
    b = agent(Role.PASSIVE)
    reply = b.on_heartbeat_request(req, now=T + 0.8)  # B's clock, at its reply
    assert reply.promise and b.promise_made_at == T + 0.8
    a.on_heartbeat_reply(reply, now=T + 1.5)
    assert a.promise_from == T  # the send time, not the arrival
    assert a.write_deadline() == T + 3 - 0.5


def test_a_passive_that_decides_to_take_over_stops_promising_in_the_same_step():
    b = agent(Role.PASSIVE)
    b.promise_made_at = T - 5
    b.read_done(HELD, Token(40), T - 10, T - 10)
    b.poll(T, NodeStatus(stored_lsn=480))
    assert b.taking_over and b.pending == "prepare"
    reply = b.on_heartbeat_request(HeartbeatRequest(9, "node1", 3, False, None), T + 0.01)
    assert not reply.promise


def test_a_restarted_node_counts_its_start_as_a_promise():
    b = Agent(me="node2", peer="node1", settings=S, epoch=3, started_at=T)
    b.read_done(HELD, Token(40), T - 10, T - 10)
    b.view = WitnessView(HELD, Token(40), T - 10, T - 10)
    d = decide(b.observed(NodeStatus(stored_lsn=480)), T + 2.9)
    assert d.kind is Kind.WAIT and "promised node1" in d.reason
    assert decide(b.observed(NodeStatus(stored_lsn=480)), T + 3.0).kind is Kind.PROMOTE


def test_the_margin_is_taken_on_both_sides():
    zero = dataclasses.replace(S, margin=0.0)
    assert may_write_until(T, None, zero) == T + 3.0
    assert may_write_until(T, None, S) == T + 2.5
    assert decide(passive(changed_ago=3.2, promised_ago=None, settings=zero), T).kind is Kind.PROMOTE
    assert decide(passive(changed_ago=3.2, promised_ago=None), T).kind is Kind.WAIT


def test_write_deadline_is_the_later_promise_and_none_without_either():
    assert may_write_until(None, None, S) == -math.inf
    assert may_write_until(T, T + 1, S) == T + 1 + 3 - 0.5
    assert may_write_until(T + 2, T, S) == T + 2 + 3 - 0.5


def test_an_active_whose_store_did_not_work_lets_the_lease_go():
    a = active(lease_start=T - 1.5, store_ok_at=T - 1.2)
    d = decide(a, T)
    assert d.kind is Kind.WAIT and "store has not worked" in d.reason
    assert decide(active(lease_start=T - 1.5, store_ok_at=T - 0.5), T).kind is Kind.RENEW
    # and it tells the peer it is letting go, so the peer stops promising
    ag = agent()
    req = ag.heartbeat_due(T, NodeStatus(store_ok_at=T - 5))
    assert req.letting_go


# ---- the dial, a stale copy, restarts and a fresh witness


def test_lossless_dial_waits_in_async_mode_and_says_how_much_may_be_missing():
    async_held = dataclasses.replace(HELD, mode="async", async_from_lsn=470)
    d = decide(passive(3.6, 3.1, state=async_held, stored_lsn=480), T)
    assert d.kind is Kind.WAIT and d.reason == "mount dial lossless: async since LSN 470, up to 20 records missing"
    good = dataclasses.replace(S, dial=Dial(DialKind.GOOD, 20))
    assert decide(passive(3.6, 3.1, state=async_held, stored_lsn=480, settings=good), T).kind is Kind.PROMOTE
    d = decide(passive(3.6, 3.1, state=async_held, stored_lsn=479, settings=good), T)
    assert d.kind is Kind.WAIT and "over the limit 20" in d.reason
    # a higher reservation the copy stored from the stream raises the bound
    assert not dial_allows(good.dial, async_held, 480, own_reserved_lsn=600)[0]


def test_lossless_dial_allows_sync_mode():
    assert dial_allows(Dial(), HELD, 10) == (True, 0, "sync: nothing acknowledged is missing")
    assert Dial.parse("best", best_limit=7) == Dial(DialKind.BEST, 7)


def test_a_stale_copy_never_takes_over():
    d = decide(passive(3.6, 3.1, stored_lsn=449), T)
    assert d.kind is Kind.WAIT and "copy is stale: stored LSN 449 < 450" in d.reason


def test_the_witness_holder_restarted_takes_a_new_epoch_at_once():
    mine = dataclasses.replace(HELD, holder="node2")
    d = decide(passive(0.1, 0.0, state=mine), T)
    assert d.kind is Kind.PROMOTE and d.epoch == 4
    assert decide(passive(0.1, 0.0, state=mine, epoch=2), T).epoch == 4  # above the witness's epoch


def test_a_witness_that_went_back_in_epochs_is_not_acted_on():
    d = decide(passive(3.6, 3.1, highest_epoch_seen=5), T)
    assert d.kind is Kind.WAIT and "below epoch 5 this node has seen" in d.reason
    mine = dataclasses.replace(HELD, holder="node2")
    assert decide(passive(0.1, 0.0, state=mine, highest_epoch_seen=5), T).kind is Kind.WAIT


def test_a_passive_follows_a_new_epoch_of_its_peer():
    newer = HELD.successor(epoch=5, holder="node1")
    d = decide(passive(0.1, 0.1, state=newer), T)
    assert d.kind is Kind.FOLLOW and d.epoch == 5 and d.holder == "node1"


def test_fresh_witness_first_activation_and_the_other_node_waits():
    empty = WitnessView(None, Token(0), T - 0.1, T - 0.1)
    pref = Observed(
        me="node1", peer="node2", role=Role.PASSIVE, epoch=0, highest_epoch_seen=0, settings=S, witness=empty, preferred=True
    )
    assert decide(pref, T).kind is Kind.PROMOTE and decide(pref, T).epoch == 1
    other = dataclasses.replace(pref, me="node2", peer="node1", preferred=False, promise_made_at=T - 0.1)
    assert decide(other, T).kind is Kind.WAIT
    assert decide(other, T + 3.5).kind is Kind.PROMOTE  # the preferred node never came
    assert decide(dataclasses.replace(other, witness=None), T).reason == "witness not read yet"


# ---- MODSEQ and UID reservations


def test_modseq_never_repeats_across_epochs_and_grows_at_failover():
    assert modseq(1, 5) == (1 << 40) | 5
    assert modseq(2, 1) > modseq(1, (1 << 40) - 1)
    with pytest.raises(ValueError):
        modseq(1, 1 << 40)
    with pytest.raises(ValueError):
        modseq(1 << 23, 0)
    assert modseq((1 << 23) - 1, 5) <= (1 << 63) - 1


def test_reservations_and_the_uid_gap():
    assert reserve_ahead(used=100, reserved=400, block=500) == 400
    assert reserve_ahead(used=200, reserved=400, block=500) == 700
    assert first_uid_after_takeover(900, 0, 850) == 901
    assert first_uid_after_takeover(900, 1200, 850) == 1201  # the old active shipped a higher one
    assert uid_gap(900, 850) == 50 and uid_gap(900, 950) == 0


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError):
        Settings(renew_interval=3, lease_ttl=3)
    with pytest.raises(ValueError):
        Settings(margin=3)


def test_back_to_sync_binds_the_node_when_the_write_is_issued_not_when_it_is_answered():
    """Found by the simulator (seed 19850 of the slow run): a renew carrying "sync" landed but its
    answer was lost; the node, still told "async", acknowledged without its peer while the witness
    said sync, and a lossless takeover lost those records."""
    a = agent()
    in_async = dataclasses.replace(HELD, mode="async", async_from_lsn=470)
    a.view = WitnessView(in_async, Token(40), T - 1, T - 1)
    a.need_read = False
    a.told_mode = ("async", 470)
    a.lease_start = T - 1.0
    effects = a.poll(T, NodeStatus(store_ok_at=T, want_mode="sync"))
    kinds = [type(e).__name__ for e in effects]
    assert kinds == ["ModeChanged", "WriteWitness"] and effects[0].mode == "sync"
    write = effects[1]
    assert a.write_failed("renew", T, T + 2.5) == []  # unknown outcome: the node stays in sync
    # the node stalls and asks for async again; only a stored write lets it acknowledge alone
    a.need_read = False
    a.last_write_issued = -math.inf
    (again,) = [
        e
        for e in a.poll(T + 3, NodeStatus(store_ok_at=T + 3, want_mode="async", want_async_from=480))
        if isinstance(e, WriteWitness)
    ]
    assert again.new.mode == "async"
    out = a.write_done("renew", again.new, Token(42), T + 3, T + 3.1)
    assert [(e.mode, e.async_from_lsn) for e in out if type(e).__name__ == "ModeChanged"] == [("async", 480)]
    assert write.new.mode == "sync"


def test_a_holder_reactivating_keeps_the_async_fallback_in_force():
    """Found by the simulator (seed 34174): the holder, in async mode with acknowledgements its
    peer lacked, restarted and took a new epoch writing "sync"; then cut off, its peer took over
    under the lossless dial and 23 acknowledged records were lost."""
    in_async = dataclasses.replace(HELD, mode="async", async_from_lsn=9, both_stored_lsn=8, reserved_lsn=40)
    for holder, expect in (("node1", ("async", 9)), ("node2", ("sync", None))):
        best = dataclasses.replace(S, dial=Dial(DialKind.BEST, 10**6))  # lets node1 take over from node2
        me = Agent(me="node1", peer="node2", settings=best, epoch=3, started_at=T - 100)
        me.read_done(dataclasses.replace(in_async, holder=holder), Token(40), T - 10, T - 10)
        me.promise_made_at = None
        effects = me.poll(T, NodeStatus(stored_lsn=31, store_ok_at=T))
        assert [type(e).__name__ for e in effects] == ["PrepareTakeover"], effects
        (write,) = me.prepared(31, T, NodeStatus(stored_lsn=31, store_ok_at=T))
        assert (write.new.mode, write.new.async_from_lsn) == expect, holder
