"""A node's configuration: one JSON file in its data directory, written by `pair up` or by hand.

Everything a node listens on and who its peer is lives here, so a node restarted from the same
file comes back exactly as it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailpair.durable import write_json

ANALYSIS_ROOM = 4 * 1024 * 1024  # a log record beside the message: ENVELOPE, BODYSTRUCTURE, trace
# The largest segment, so that a record filling one always fits a replication frame (the codec's
# MAX_BATCH_BYTES; tests/replication/test_codec.py holds the two together).
MAX_SEGMENT_SIZE = 64 * 1024 * 1024


@dataclass
class Listen:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class NodeConfig:
    name: str
    data: str
    role: str = "active"  # the role this node starts in: "active" or "passive"
    domain: str = "example.test"
    imap: Listen = field(default_factory=Listen)
    lmtp: Listen = field(default_factory=Listen)
    smtp: Listen = field(default_factory=Listen)
    admin: Listen = field(default_factory=Listen)
    replication: Listen = field(default_factory=Listen)
    peer_name: str | None = None
    peer_replication: Listen | None = None
    peer_admin: Listen | None = None
    witness: str | None = None
    secret: str = ""
    admin_token: str = ""
    mode: str = "async"  # replication mode: "sync" or "async"
    max_message_bytes: int = 25 * 1024 * 1024
    segment_size: int = 32 * 1024 * 1024
    log_json: bool = False
    imaps: Listen | None = None  # IMAP with TLS from the first byte (port 993 style), if set
    tls_cert: str | None = None  # PEM files for STARTTLS and imaps; None: a self-signed pair in DATA/tls
    tls_key: str | None = None
    lmtp_socket: str | None = None  # LMTP also listens on this Unix socket path (for a local MTA)
    analysis_workers: int | None = None  # helper processes analysing incoming mail; None: one per core beyond two
    # Overrides of the LMTP/SMTP listeners' limits and timeouts (DeliverySettings' names), e.g.
    # {"max_connections_per_address": 100, "idle_timeout": 60}; unknown names are refused at start.
    delivery: dict[str, Any] = field(default_factory=dict)
    # The same for the IMAP listeners (ImapSettings' names), e.g. {"login_delay_max": 30}; in
    # node.json as "imap_settings" ("imap" is the listener's address).
    imap_settings: dict[str, Any] = field(default_factory=dict)
    # Replication runs over mutual TLS with certificates of the pair's own authority (made by
    # `pair up` in DATA/tls, or these files an operator supplies). "plain" only on request, for a
    # trusted link; status then says "transport": "plain" for the copy.
    replication_transport: str = "tls"
    replication_cert: str | None = None  # None: DATA/tls/replication-cert.pem
    replication_key: str | None = None  # None: DATA/tls/replication-key.pem
    replication_ca: str | None = None  # None: DATA/tls/replication-ca.pem (the only authority trusted)

    def __post_init__(self) -> None:
        if self.replication_transport not in ("tls", "plain"):
            raise ValueError(f'replication_transport must be "tls" or "plain", not {self.replication_transport!r}')
        # A message of the size limit is one log record, and a record never spans segments:
        # refuse at once a configuration whose largest message could never be stored.
        if self.segment_size > MAX_SEGMENT_SIZE:
            raise ValueError(
                f"segment_size {self.segment_size} is over {MAX_SEGMENT_SIZE}: a record that large would not fit "
                "one replication frame"
            )
        room = self.max_message_bytes + ANALYSIS_ROOM
        if self.segment_size < room:
            raise ValueError(
                f"segment_size {self.segment_size} cannot hold a message of max_message_bytes {self.max_message_bytes}: "
                f"make segment_size at least {room} (the limit plus {ANALYSIS_ROOM} for its analysis) "
                f"or max_message_bytes at most {self.segment_size - ANALYSIS_ROOM}"
            )

    def replication_tls_files(self) -> tuple[str, str, str]:
        """(cert, key, CA) of this node's replication TLS: the configured ones, else DATA/tls's."""
        tls = Path(self.data) / "tls"
        return (
            self.replication_cert or str(tls / "replication-cert.pem"),
            self.replication_key or str(tls / "replication-key.pem"),
            self.replication_ca or str(tls / "replication-ca.pem"),
        )

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        raw = json.loads(Path(path).read_text())
        for key in ("imap", "imaps", "lmtp", "smtp", "admin", "replication", "peer_replication", "peer_admin"):
            if raw.get(key) is not None:
                raw[key] = Listen(**raw[key])
        return cls(**raw)

    def save(self, path: Path) -> None:
        # 0600 (write_json's default): it holds the cluster secret and the admin token
        write_json(path, asdict(self), indent=2, sort_keys=True)
