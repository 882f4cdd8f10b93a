"""What an LMTP or SMTP listener is configured with (a node fills it from its NodeConfig)."""

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
    # RFC 5322 allows 998 octets per line; Postfix wraps at 999, so 1000 accepts every standard MTA.
    max_line_length: int = 1000
    command_timeout: float = 300.0  # idle time between commands (RFC 5321 4.5.3.2: 5 minutes)
    data_timeout: float = 600.0  # whole DATA transfer of one message
    recipient_delimiter: str = "+"
    unix_socket: str | None = None  # LMTP only: also listen on this path
    unix_socket_mode: int = 0o660
    tls_cert: str | None = None  # SMTP STARTTLS; a self-signed pair is made when both are None
    tls_key: str | None = None
    tls_dir: str | None = None  # where the self-signed pair goes (default: a temporary directory)
    shutdown_grace: float = 10.0  # seconds close() waits for deliveries in progress
