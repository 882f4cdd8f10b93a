"""The async ClusterLoop driving two agents against one in-memory witness with a fake clock:
the effects reach the node in the order CLUSTER.md sets."""

from __future__ import annotations

import asyncio

from mailpair.cluster.clock import BootClock, FakeClock
from mailpair.cluster.decide import Role, Settings
from mailpair.cluster.loop import Agent, BecomeActive, BecomePassive, ClusterLoop, HeartbeatReply, HeartbeatRequest, NodeStatus
from mailpair.cluster.witness import MemoryWitness

S = Settings()


class FakeNode:
    """Records what the loop asks of it; its store works unless told otherwise."""

    def __init__(self, clock: FakeClock, stored: int = 0) -> None:
        self.clock = clock
        self.calls: list[tuple] = []
        self.stored = stored
        self.store_works = True
        self.kept_epoch = 0
        self.last_ok = clock.now()

    def status(self) -> NodeStatus:
        if self.store_works:
            self.last_ok = self.clock.now()
        return NodeStatus(stored_lsn=self.stored, store_ok_at=self.last_ok, used_lsn=self.stored)

    def record_epoch(self, epoch: int) -> None:
        assert epoch >= self.kept_epoch
        self.kept_epoch = epoch

    async def prepare_takeover(self) -> int:
        self.calls.append(("prepare",))
        return self.stored

    async def become_active(self, effect: BecomeActive) -> None:
        assert self.kept_epoch == effect.epoch, "the epoch is kept on disk before the node acts in it"
        self.calls.append(("active", effect.epoch, effect.previous_end))

    async def become_passive(self, effect: BecomePassive) -> None:
        self.calls.append(("passive", effect.epoch, effect.holder, effect.was_active))

    async def resume_passive(self) -> None:
        self.calls.append(("resume",))

    async def fence(self, reason: str) -> None:
        self.calls.append(("fence",))

    async def unfence(self) -> None:
        self.calls.append(("unfence",))

    async def mode_changed(self, mode, async_from_lsn) -> None:
        self.calls.append(("mode", mode))


class DirectPeer:
    def __init__(self) -> None:
        self.agent: Agent | None = None
        self.clock: FakeClock | None = None
        self.up = True

    async def heartbeat(self, request: HeartbeatRequest) -> HeartbeatReply:
        if not self.up or self.agent is None:
            raise ConnectionError("link down")
        return self.agent.on_heartbeat_request(request, self.clock.now())


def make_pair():
    clock = FakeClock()
    witness = MemoryWitness()
    nodes, agents, loops, peers = [], [], [], []
    for i, (me, peer) in enumerate((("node1", "node2"), ("node2", "node1"))):
        agent = Agent(me=me, peer=peer, settings=S, epoch=0, started_at=clock.now(), preferred=i == 0)
        node = FakeNode(clock, stored=10)
        link = DirectPeer()
        link.clock = clock
        nodes.append(node)
        agents.append(agent)
        peers.append(link)
        loops.append(ClusterLoop(agent, clock, witness, node, link))
    peers[0].agent, peers[1].agent = agents[1], agents[0]
    return clock, witness, nodes, agents, loops, peers


async def run_for(clock, loops, seconds, heartbeat=True):
    end = clock.now() + seconds
    while clock.now() < end:
        for loop in loops:
            await loop.tick()
            if heartbeat and loop.peer is not None:
                req = loop.agent.heartbeat_due(clock.now(), loop.node.status())
                if req is not None:
                    try:
                        loop.agent.on_heartbeat_reply(await loop.peer.heartbeat(req), clock.now())
                    except ConnectionError:
                        pass
        clock.advance(0.1)


def test_first_activation_then_failover_after_the_active_stops():
    async def go():
        clock, witness, nodes, agents, loops, peers = make_pair()
        await run_for(clock, loops, 3)
        assert agents[0].role is Role.ACTIVE and agents[0].epoch == 1
        assert ("active", 1, (0, 10)) in nodes[0].calls
        assert agents[1].role is Role.PASSIVE and agents[0].promise_from is not None
        assert agents[0].may_write(clock.now())
        # node1 dies: only node2's loop runs on
        t_dead = clock.now()
        await run_for(clock, loops[1:], 8, heartbeat=False)
        assert agents[1].role is Role.ACTIVE and agents[1].epoch == 2
        took = [c for c in nodes[1].calls if c[0] == "active"]
        assert took == [("active", 2, (1, 10))]
        assert nodes[1].calls.index(("prepare",)) < nodes[1].calls.index(took[0])
        state, _ = await witness.read()
        assert state.holder == "node2" and state.epoch == 2
        # the failover came after the lease and the promise lapsed (3 s + margin), within ~5 s
        assert 3.5 <= clock.now() - t_dead
        # node1 comes back as a fresh agent: it follows node2 in epoch 2
        agents[0] = Agent(me="node1", peer="node2", settings=S, epoch=1, started_at=clock.now(), preferred=True)
        loops[0] = ClusterLoop(agents[0], clock, witness, nodes[0], peers[0])
        peers[1].agent = agents[0]
        await run_for(clock, loops, 3)
        assert agents[0].role is Role.PASSIVE and agents[0].epoch == 2
        assert ("passive", 2, "node2", False) in nodes[0].calls
        assert agents[1].may_write(clock.now()) and not agents[0].may_write(clock.now())

    asyncio.run(go())


def test_active_cut_off_from_witness_and_peer_fences_then_demotes():
    async def go():
        clock, witness, nodes, agents, loops, peers = make_pair()
        await run_for(clock, loops, 3)
        assert agents[0].role is Role.ACTIVE
        # node1 loses the witness and the link; node2 still reaches the witness
        peers[0].up = peers[1].up = False
        cut_at = clock.now()
        loops[0].witness = MemoryWitness()
        loops[0].witness.fail = True
        await run_for(clock, loops, 6)
        fenced_at = next(i for i, c in enumerate(nodes[0].calls) if c == ("fence",))
        assert fenced_at >= 0 and not agents[0].may_write(clock.now())
        assert agents[1].role is Role.ACTIVE and agents[1].epoch == 2
        assert clock.now() - cut_at >= 3.5
        # reconnected: node1 reads epoch 2 and rejoins as passive
        loops[0].witness = witness
        peers[0].up = peers[1].up = True
        await run_for(clock, loops, 2)
        assert agents[0].role is Role.PASSIVE and ("passive", 2, "node2", True) in nodes[0].calls

    asyncio.run(go())


def test_a_wedged_store_lets_the_lease_go():
    async def go():
        clock, witness, nodes, agents, loops, peers = make_pair()
        await run_for(clock, loops, 3)
        nodes[0].store_works = False
        await run_for(clock, loops, 8)
        assert ("fence",) in nodes[0].calls
        assert agents[1].role is Role.ACTIVE

    asyncio.run(go())


def test_the_real_clock_does_not_go_back():
    c = BootClock()
    a = c.now()
    assert c.now() >= a and c.source in ("CLOCK_BOOTTIME", "monotonic")
    asyncio.run(c.sleep(0.01))
    assert c.now() - a >= 0.01


def test_a_failed_takeover_preparation_resumes_the_passive_and_a_lost_epoch_file_stops_the_loop():
    async def go():
        clock, witness, nodes, agents, loops, peers = make_pair()
        await run_for(clock, loops, 3)

        async def broken_prepare():
            nodes[1].calls.append(("prepare failed",))
            raise OSError("fsync failed")

        nodes[1].prepare_takeover = broken_prepare
        await run_for(clock, loops[1:], 6, heartbeat=False)
        assert ("prepare failed",) in nodes[1].calls and ("resume",) in nodes[1].calls
        assert agents[1].role is Role.PASSIVE and "takeover preparation failed" in agents[1].last_action.reason
        state, _ = await witness.read()
        assert state.holder == "node1"  # it never wrote the witness

        def no_disk(epoch):
            raise OSError("disk full")

        del nodes[1].prepare_takeover  # the working one again
        nodes[1].record_epoch = no_disk
        try:
            await run_for(clock, loops[1:], 3, heartbeat=False)
        except OSError:
            pass
        else:
            raise AssertionError("the loop went on without keeping the epoch")
        assert not any(c[0] == "active" for c in nodes[1].calls)

    asyncio.run(go())
