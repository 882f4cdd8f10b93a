"""What an LMTP or SMTP listener is configured with (a node fills it from its NodeConfig, and an
operator may override any of these in node.json's "delivery" object).

The limits are there so that one address cannot lock everyone else out (issue 17): a share of the
connections per address, short waits while a connection is idle, and a floor on the data rate in
DATA so a trickle cannot hold a connection for the whole data_timeout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeliverySettings:
    host: str = "127.0.0.1"
    port: int = 0
    domain: str = "example.test"
    extra_domains: tuple[str, ...] = ()  # more domains whose users live here
    hostname: str | None = None  # name in the greeting and Received header; default: domain
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_connections: int = 200
    # At most this many connections from one IPv4 address or IPv6 /64 (Unix-socket clients count
    # only towards max_connections). Above Postfix's default destination concurrency (20) and the
    # benchmark's 32, well below max_connections, so one address cannot take every slot.
    max_connections_per_address: int = 50
    # RFC 5322 allows 998 octets per line; Postfix wraps at 999, so 1000 accepts every standard MTA.
    max_line_length: int = 1000
    # Before the first command and between transactions (no MAIL yet): an MTA sends its LHLO at
    # once and Postfix keeps an idle cached connection for 2 s, so a longer silence is a client
    # holding a slot.
    idle_timeout: float = 30.0
    command_timeout: float = 300.0  # between commands inside a transaction (RFC 5321 4.5.3.2: 5 minutes)
    data_timeout: float = 600.0  # whole DATA transfer of one message
    # In DATA, a client must have sent at least min_data_rate bytes per second of the time beyond
    # data_rate_grace (so a stall of up to that long at the start, or a proportionally longer one
    # later, is forgiven); below it the connection is closed with 421 4.4.2.
    min_data_rate: int = 1024
    data_rate_grace: float = 15.0
    recipient_delimiter: str = "+"
    # Accounts whose +detail may name a special-use folder (Sent, Drafts, Trash, Junk...); for
    # everyone else such a message goes to INBOX (recipients.py says why).
    detail_into_special_use: tuple[str, ...] = ()
    unix_socket: str | None = None  # LMTP only: also listen on this path
    unix_socket_mode: int = 0o660
    tls_cert: str | None = None  # SMTP STARTTLS; a self-signed pair is made when both are None
    tls_key: str | None = None
    tls_dir: str | None = None  # where the self-signed pair goes (default: a temporary directory)
    shutdown_grace: float = 10.0  # seconds close() waits for deliveries in progress
