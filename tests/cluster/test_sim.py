"""The deterministic simulator: thousands of seeded schedules keep every rule; deliberately broken
variants are caught; CLUSTER.md's table rows as scripted schedules end as the table says."""

from __future__ import annotations

import random

import pytest

from mailpair.cluster.sim import VARIANTS, Fault, Sim, Violation, run_many

DEFAULT_SCHEDULES = 2000
SLOW_SCHEDULES = 30000


@pytest.mark.timeout(3600)  # with --slow: 30000 schedules on a machine shared with others
def test_seeded_schedules_keep_every_rule(request):
    count = SLOW_SCHEDULES if request.config.getoption("--slow") else DEFAULT_SCHEDULES
    summary = run_many(range(count), stop_at_first=True)
    assert not summary.violations, "\n".join(str(v) for v in summary.violations)
    assert summary.schedules == count
    assert summary.takeovers > count * 1.2, "too few failovers: the schedules do not exercise takeover"
    assert summary.acks > count * 50
    print(f"{summary.schedules} schedules, {summary.per_minute:.0f}/min, {summary.takeovers} activations, {summary.acks} acks")


def test_a_seed_replays_exactly():
    a = Sim(1234, trace=True).run()
    b = Sim(1234, trace=True).run()
    assert a.trace == b.trace and a.events == b.events and a.acks == b.acks and a.history == b.history


@pytest.mark.parametrize(
    "variant, rules",
    [
        (
            "lease-from-end",
            {
                "never two nodes allowed to write at once",
                "a fenced node acknowledges nothing",
                "no acknowledgement after another node's epoch CAS",
            },
        ),
        ("ignore-promise", {"never two nodes allowed to write at once", "no acknowledgement after another node's epoch CAS"}),
        ("ignore-dial", {"the dial is respected"}),
        (
            "no-margin",
            {
                "never two nodes allowed to write at once",
                "no acknowledgement after another node's epoch CAS",
                "a fenced node acknowledges nothing",
            },
        ),
        ("reuse-epoch", {"two nodes never accept writes in one epoch", "no MODSEQ shown for two things"}),
        ("uid-from-log", {"no UID shown for two things"}),
        (
            "ignore-stored-reservations",
            {"the dial is respected", "no UID shown for two things", "no MODSEQ shown for two things"},
        ),
    ],
)
def test_the_simulator_catches_a_broken_rule(variant, rules):
    summary = run_many(range(3000), VARIANTS[variant], stop_at_first=True)
    assert summary.violations, f"{variant} survived {summary.schedules} schedules: the simulator cannot see it"
    v = summary.violations[0]
    assert v.rule in rules, v
    assert f"--seed {v.seed} --trace --variant {variant}" in str(v)  # printed so it replays
    with pytest.raises(Violation) as again:
        Sim(v.seed, VARIANTS[variant]).run()
    assert again.value.rule == v.rule and again.value.detail == v.detail


def _slow_share_script(seed: int) -> list[Fault]:
    """The link is cut, the passive's share answers reads late, then the active loses the witness."""
    t = random.Random(seed).uniform(5, 9)
    return [Fault("cut", 1.0, 30.0, 0), Fault("wslow", 1.0, 30.0, 1, 1.95), Fault("wcut", t, 30.0, 0)]


def test_a_window_counted_from_the_reads_issue_is_caught_on_a_slow_share():
    found = None
    for seed in range(600):
        try:
            Sim(seed, VARIANTS["window-from-issue"], faults=_slow_share_script(seed)).run()
        except Violation as v:
            found = v
            break
    assert found is not None and found.rule in ("never two nodes allowed to write at once", "a fenced node acknowledges nothing")
    for seed in range(150):  # the same script with the window counted from the return is safe
        Sim(seed, faults=_slow_share_script(seed)).run()


# ---- the table, as scripted schedules (node1 is the first active)


def run(faults, seed=7, **kw) -> Sim:
    return Sim(seed, faults=faults, **kw).run()


def actives(sim: Sim) -> list[tuple[str, int]]:
    return [(n, e) for _, what, n, e in sim.history if what == "active"]


def acks_between(sim: Sim, node: str, t0: float, t1: float) -> bool:
    return any(n == node and first <= t1 and last >= t0 for (n, _), (_, first, last) in sim.acks_by.items())


@pytest.mark.parametrize("seed", range(5))
def test_link_between_nodes_lost_no_failover_active_keeps_writing(seed):
    sim = run([Fault("cut", 2.0, 14.0, 0)], seed=seed, mode="async")
    assert actives(sim) == [("node1", 1)]
    assert acks_between(sim, "node1", 8.0, 14.0)


@pytest.mark.parametrize("seed", range(5))
def test_witness_lost_no_failover_active_keeps_writing_on_the_promise(seed):
    sim = run([Fault("wcut", 2.0, 14.0, 0), Fault("wcut", 2.0, 14.0, 1)], seed=seed)
    assert actives(sim) == [("node1", 1)]
    assert acks_between(sim, "node1", 8.0, 14.0)
    # past the witness's reservation, on reservations its peer stored from the stream
    reserved = max(st.reserved_lsn for t, st in sim.w_history if t < 2.0)
    assert any(r.lsn > reserved and 2.0 < sim.ack_times[rid] < 14.0 for rid, r in sim.acked.items())
    assert not any(what == "fence" for _, what, _, _ in sim.history)


@pytest.mark.parametrize("seed", range(5))
def test_active_crash_passive_takes_over_in_under_five_seconds(seed):
    sim = run([Fault("crash", 4.0, 14.0, 0)], seed=seed)
    took = [(t, n, e) for t, what, n, e in sim.history if what == "active" and n == "node2"]
    assert took and 3.5 <= took[0][0] - 4.0 < 5.0, took
    assert acks_between(sim, "node2", took[0][0], sim.end)
    # node1 restarted at 14 s follows node2
    assert "passive" in {w for _, w, n, _ in sim.history if n == "node1"}


@pytest.mark.parametrize("seed", range(5))
def test_active_cut_off_from_both_fences_before_the_takeover(seed):
    sim = run([Fault("cut", 4.0, 14.0, 0), Fault("wcut", 4.0, 14.0, 0)], seed=seed)
    fence = min(t for t, what, n, _ in sim.history if what == "fence" and n == "node1")
    cas = min(t for t, what, n, e in sim.history if what == "cas" and n == "node2")
    assert 4.0 < fence < 7.0 and fence < cas
    assert not acks_between(sim, "node1", fence, sim.end) or all(
        last <= fence for (n, _), (_, _, last) in sim.acks_by.items() if n == "node1"
    )
    assert ("node2", 2) in actives(sim)


@pytest.mark.parametrize("seed", range(5))
def test_paused_active_wakes_fenced_and_rejoins_as_passive(seed):
    sim = run([Fault("pause", 4.0, 12.0, 0)], seed=seed)
    assert ("node2", 2) in actives(sim)
    node1 = [(t, what) for t, what, n, _ in sim.history if n == "node1" and t >= 12.0]
    assert node1[0][1] == "fence" and ("passive" in [w for _, w in node1])
    assert all(last < 12.0 for (n, e), (_, _, last) in sim.acks_by.items() if n == "node1" and e == 1)


@pytest.mark.parametrize("seed", range(5))
def test_only_b_to_a_lost_and_active_loses_witness_passive_takes_over(seed):
    # node2 -> node1 cut ("cut1" cuts node -> other; here node 1 = node2), and node1 loses the witness.
    # Acknowledgements from node2 are lost too, so node1 falls back to async: dial "best" lets it go.
    sim = run([Fault("cut1", 2.0, 20.0, 1), Fault("wcut", 4.0, 20.0, 0)], seed=seed, dial="best")
    assert ("node2", 2) in actives(sim)
    fence = min(t for t, what, n, _ in sim.history if what == "fence" and n == "node1")
    cas = min(t for t, what, n, e in sim.history if what == "cas" and n == "node2" and e == 2)
    assert fence < cas
    # with the lossless dial the same faults leave node2 waiting: node1 acknowledged without it
    sim = run([Fault("cut1", 2.0, 20.0, 1), Fault("wcut", 4.0, 20.0, 0)], seed=seed, dial="lossless")
    assert not any(n == "node2" for n, _ in actives(sim))


@pytest.mark.parametrize("seed", range(5))
def test_async_lossless_no_automatic_failover_while_records_may_be_missing(seed):
    sim = run([Fault("crash", 4.0, 16.0, 0)], seed=seed, mode="async", dial="lossless")
    assert not any(n == "node2" for n, _ in actives(sim))  # node2 waited for node1
    assert any(n == "node1" and e > 1 for n, e in actives(sim))  # which came back and took a new epoch
    sim = run([Fault("crash", 4.0, 16.0, 0)], seed=seed, mode="async", dial="best")
    assert ("node2", 2) in actives(sim)


def test_switchover_moves_the_role_without_loss_or_fence():
    seconds = []
    for seed in range(20):
        sim = run([Fault("switchover", 5.0, 5.0, 0)], seed=seed)
        took = [(t, n, e) for t, what, n, e in sim.history if what == "active" and n == "node2"]
        assert took and took[0][0] - 5.0 < 5.0, (seed, took)
        seconds.append(took[0][0] - 5.0)
        assert not any(what == "fence" for _, what, _, _ in sim.history), seed
        assert "passive" in [w for t, w, n, _ in sim.history if n == "node1" and t >= 5.0]
        assert not sim.lost, seed  # nothing acknowledged was left behind
        assert acks_between(sim, "node2", took[0][0], sim.end)
    # the loops here tick every 0.25 s; a lost witness reply (1 % of messages) costs a 2 s timeout
    assert sorted(seconds)[len(seconds) // 2] < 1.5, seconds
