"""IMAP listener settings. The limits that defend the listener against one client or one address
(issue 17) are in the second block; README's SECURITY section lists them with their defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ImapSettings:
    host: str = "127.0.0.1"
    port: int = 0
    domain: str = "example.test"
    max_message_bytes: int = 25 * 1024 * 1024
    # None: allowed only when the listener is on loopback (RFC 9051 asks for TLS before LOGIN).
    allow_plaintext_login: bool | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    implicit_tls: bool = False  # port-993 style: TLS from the first byte
    idle_timeout: float = 30 * 60.0  # seconds without a command once logged in (also the IDLE limit; RFC 3501's 30 min)
    preauth_timeout: float = 60.0  # seconds from connecting to logging in, whatever the client sends meanwhile
    command_timeout: float = 60.0  # seconds for the rest of a command once it has started
    max_literal_bytes: int | None = None  # None: max_message_bytes
    max_command_bytes: int = 64 * 1024
    max_connections_per_user: int = 20
    max_connections: int = 2000  # all sessions of this listener, logged in or not
    # Login penalty (guard.py), before the password is checked, per address and per account: after
    # n recent failures the next check waits login_delay * 2**(n-1) s after the last one, at most
    # login_delay_max; failures are forgotten login_penalty_window s after the last.
    login_delay: float = 1.0
    login_delay_max: float = 15.0
    login_penalty_window: float = 300.0
    login_penalty_entries: int = 4096  # addresses (and accounts) remembered, least recently used dropped
    max_preauth_per_address: int = 20  # connections not yet logged in from one IPv4 address / IPv6 /64
    preauth_literal_bytes: int = 8 * 1024  # largest literal before login (LOGIN/AUTHENTICATE need little)
    min_data_rate: int = 1024  # bytes/s a command (a literal) must arrive at once past data_rate_grace s
    data_rate_grace: float = 15.0
    auth_cache_ttl: float = 300.0  # seconds a successful login is checked by a fast keyed hash; 0: off
    fetch_batch: int = 500  # messages per reader-thread round trip in FETCH

    def plaintext_allowed(self) -> bool:
        if self.allow_plaintext_login is None:
            return is_loopback(self.host)
        return self.allow_plaintext_login

    def literal_limit(self) -> int:
        return self.max_literal_bytes if self.max_literal_bytes is not None else self.max_message_bytes
