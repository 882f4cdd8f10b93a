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

Where this goes beyond ../shared/CLUSTER.md (found by the simulator; the shared page is read-only
here, so the rules live in this list until it is amended):
- A renew that writes the witness back to sync binds the node to sync the moment the write is
  issued; the node may answer without its peer only after a write saying async is known stored
  (a landed write whose reply was lost otherwise let it acknowledge alone: seed 19850).
- "No fallback since B's last stored record" carries across epochs: a holder that was in async
  fallback and reactivates from its own log keeps the fallback until its peer has caught up
  (otherwise a lossless takeover lost 23 acknowledged records: seed 34174).
- A store refuses a record of an epoch lower than one it has kept, including a group commit whose
  slow fsync ends after a demotion (seed 25578).
- Each directory-witness state file names the nonce of the state it follows, so a writer with a
  very old token cannot re-create a pruned state number beneath newer ones.
- With only B->A lost and A already in async fallback, the lossless dial keeps B waiting rather
  than taking over; switchover is the witness naming the peer, which activates in one new epoch;
  a holder that restarts reactivates at once (the compare-and-swap settles any race).
"""
