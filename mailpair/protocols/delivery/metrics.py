"""Prometheus series of the delivery listeners, labelled by protocol ("lmtp" or "smtp")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Counter("mailpair_delivery_connections_total", "Delivery connections accepted", ["protocol"])
REFUSED = Counter("mailpair_delivery_connections_refused_total", "Connections refused (limit or shutdown)", ["protocol"])
OPEN = Gauge("mailpair_delivery_open_connections", "Delivery connections open now", ["protocol"])
COMMANDS = Counter("mailpair_delivery_commands_total", "Commands received", ["protocol", "command"])
DELIVERIES = Counter("mailpair_deliveries_total", "Per-recipient delivery results", ["protocol", "result"])
DELIVERY_SECONDS = Histogram(
    "mailpair_delivery_seconds",
    "From the end of DATA to the reply (parse, durable commit)",
    ["protocol"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

# Every value of DELIVERIES' "result" label; replies.recipient_error_reply names the failures.
RESULTS = ("ok", "unknown_user", "over_quota", "too_big", "unavailable", "error", "rejected")
