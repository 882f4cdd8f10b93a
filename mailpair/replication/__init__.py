"""Continuous replication: the passive node pulls, inspects, stores and replays the active's log.

The active runs a shipper (`start_shipper`): it listens for the passive, authenticates it with the
cluster secret, seeds it when it has no usable copy, and streams log records from the LSN it asks
for (file mode from segments, then block mode as records are written). The passive runs a
receiver (`start_receiver`): one copy worker per database connects, inspects every record, stores
it in its own log (fsync), acknowledges it, and a replayer applies it with the store's replay code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mailpair.replication.settings import TUNABLE, ReplicationSettings, with_overrides
from mailpair.replication.tls import client_context_for

if TYPE_CHECKING:
    from mailpair.replication.receiver import Receiver
    from mailpair.replication.shipper import Shipper
    from mailpair.store import NodeStore


async def start_shipper(store: NodeStore, settings: ReplicationSettings) -> Shipper:
    from mailpair.replication.shipper import Shipper

    settings = with_overrides(settings, store.data_dir)
    shipper = Shipper(store, settings)
    await shipper.start()
    return shipper


async def start_receiver(store: NodeStore, settings: ReplicationSettings) -> Receiver:
    from mailpair.replication.receiver import Receiver

    settings = with_overrides(settings, store.data_dir)
    client_context_for(settings)  # no certificate, no start: never a silent fall back to plain
    # The replayer keeps the GIL busy on the passive; a received batch crosses threads twice
    # (event loop -> store thread -> event loop) before its ack, and each crossing can wait a whole
    # switch interval. 1 ms instead of 5 cut the sync-mode ack time enough to lift sync/async
    # throughput from ~0.75-0.9 to ~0.93-0.99 in bench/replication_bench.py.
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)
    receiver = Receiver(store, settings)
    await receiver.start()
    return receiver


__all__ = ["TUNABLE", "ReplicationSettings", "start_receiver", "start_shipper", "with_overrides"]
