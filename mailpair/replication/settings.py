"""Replication settings: what a node's replication runs with, and the overrides an admin may put
in DATA/replication.json (a lagged copy's replay delay, timeouts, batch sizes).

Below the shipper, the receiver and their parts, so they import it without importing the package
that starts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass
class ReplicationSettings:
    secret: bytes
    host: str = "127.0.0.1"
    port: int = 0
    peer_host: str | None = None
    peer_port: int | None = None
    mode: str = "async"  # "sync": the active answers only after the passive stored the record
    node: str = "node"
    # "tls": mutual TLS with certificates of the pair's authority (replication/tls.py); "plain"
    # only when the operator asks for it on a trusted link.
    transport: str = "tls"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # Synchronous mode falls back to asynchronous (loudly) when the passive has not acknowledged
    # for this long, so the active keeps serving without its partner.
    sync_fallback_s: float = 5.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 5.0
    replay_delay_s: float = 0.0  # a lagged copy replays only records older than this
    batch_bytes: int = 4 * 1024 * 1024  # per frame of records
    batch_records: int = 5000
    stall_timeout_s: float = 10.0  # no frame for this long: the stream is stalled, reconnect
    heartbeat_s: float = 1.0
    live_buffer_records: int = 50_000  # block-mode buffer per passive; beyond it, file mode
    healthy_queue: int = 1000  # copy queue (records) under which a connected copy is Healthy
    pin_every_s: float = 2.0  # how often the active moves the copy's pin forward
    # A copy that stays away keeps the active's log from being truncated; past this much held
    # log the active lets go (loudly), so a dead passive cannot fill its disk. The copy then
    # reseeds by itself when it returns, if the log it needs is gone by then.
    max_held_log_bytes: int = 16 * 1024**3
    held_log_grace_s: float = 300.0  # away at least this long first: a reconnect is no absence
    checkpoint_every: int = 20_000  # the passive checkpoints its state after this many replayed
    seed_chunk: int = 1024 * 1024


TUNABLE = {f.name for f in fields(ReplicationSettings)} - {
    "secret", "host", "port", "peer_host", "peer_port", "node", "mode", "transport", "tls_cert", "tls_key", "tls_ca",
}  # fmt: skip


def with_overrides(settings: ReplicationSettings, data_dir: Path) -> ReplicationSettings:
    """DATA/replication.json may tune this node's replication (replay delay, timeouts, batch
    sizes): {"replay_delay_s": 3600}. Unknown keys and wrong types are refused with the reason."""
    path = Path(data_dir) / "replication.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return settings
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must hold a JSON object")
    changes = {}
    for key, value in raw.items():
        if key not in TUNABLE:
            raise ValueError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(TUNABLE))})")
        default = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{path}: {key} must be a number >= 0")
        changes[key] = type(default)(value)
    return replace(settings, **changes)
