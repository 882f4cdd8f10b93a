"""The pair as one service: who may write, decided by two nodes and a witness (CLUSTER.md).

- membership.py: a pair is exactly two nodes and a witness.
- clock.py: the clock leases are measured with (CLOCK_BOOTTIME; a fake one in tests).
- witness.py: the witness interface and its immutable state; witness_dir.py (a directory on a
  share) and witness_etcd.py (one etcd key) implement it.
- decide.py: what a node does next, as a pure function of what it observed; the write deadline,
  the mount dial, promises, MODSEQ and UID reservations.
- loop.py: the Agent state machine around decide() and ClusterLoop, the async driver a node runs
  (the node implements NodeControl).
- sim.py: a deterministic simulator of two agents and a witness under seeded faults
  (`python -m mailpair.cluster.sim --seed N --trace` replays one schedule).
"""
