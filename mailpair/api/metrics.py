"""Prometheus metrics of a node. Counters of the protocols live beside their code; the store's and
replication's figures are read from the node when /metrics is scraped."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMIT_LATENCY = Histogram(
    "mailpair_commit_latency_seconds",
    "Time from a group commit's start to its callers being answered",
    ["database"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECORDS = Gauge("mailpair_log_records_total", "Records written to the log since start", ["database"])
FSYNCS = Gauge("mailpair_log_fsyncs_total", "fdatasync calls on the log since start", ["database"])
APPLIED = Gauge("mailpair_applied_lsn", "Last LSN applied to the database", ["database"])
LAST = Gauge("mailpair_log_last_lsn", "Last LSN stored in the log", ["database"])
LOG_BYTES = Gauge("mailpair_log_bytes", "Bytes of log segments on disk", ["database"])
COPY_QUEUE = Gauge("mailpair_copy_queue_records", "Records the passive has not yet stored", ["database", "node"])
REPLAY_QUEUE = Gauge("mailpair_replay_queue_records", "Records stored but not yet replayed", ["database", "node"])
COPY_LAG = Gauge("mailpair_copy_lag_seconds", "Age of the oldest record not yet stored by the copy", ["database", "node"])
ROLE = Gauge("mailpair_node_active", "1 when this node is the active node", ["node"])
EPOCH = Gauge("mailpair_epoch", "Current epoch", ["node"])
FAILOVERS = Counter("mailpair_failovers_total", "Failovers this node took part in", ["node"])


def refresh(node) -> None:
    """Bring gauges up to date from the node's live state (called on scrape)."""
    ROLE.labels(node.config.name).set(1 if node.role == "active" else 0)
    FAILOVERS.labels(node.config.name)
    for name, db in node.store.databases.items():
        drained, db.commit_latency = db.commit_latency, []
        hist = COMMIT_LATENCY.labels(name)
        for seconds in drained:
            hist.observe(seconds)
        RECORDS.labels(name).set(db.stats["records"])
        FSYNCS.labels(name).set(db.log.fsync_count)
        APPLIED.labels(name).set(db.applied_lsn)
        LAST.labels(name).set(db.log.last_lsn)
        LOG_BYTES.labels(name).set(db.log.bytes_on_disk())
        EPOCH.labels(node.config.name).set(db.epoch)
    for dbs in node.status()["databases"]:
        for copy in dbs["copies"]:
            COPY_QUEUE.labels(dbs["name"], copy["node"]).set(copy.get("copy_queue") or 0)
            REPLAY_QUEUE.labels(dbs["name"], copy["node"]).set(copy.get("replay_queue") or 0)
            if copy.get("copy_lag_s") is not None:
                COPY_LAG.labels(dbs["name"], copy["node"]).set(copy["copy_lag_s"])
