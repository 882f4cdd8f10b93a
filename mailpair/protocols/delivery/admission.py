"""Who may open a delivery connection: pure decisions over counts, no sockets.

Rules this module keeps: a connection is admitted only under both the listener's total limit and
the limit per address, so one address (one IPv4 address, or one IPv6 /64: what one host is
usually given) cannot take the slots every other MTA needs (issue 17: 200 idle connections from
one address made a legitimate MTA get 421). A Unix-socket client has no address and counts only
towards the total.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mailpair.protocols.delivery.replies import REPLY_SHUTDOWN, REPLY_TOO_MANY_CONNECTIONS, REPLY_TOO_MANY_FROM_ADDRESS
from mailpair.protocols.delivery.settings import DeliverySettings


def address_key(peer: Any) -> str | None:
    """The address a connection counts against, from its peer name; None for a Unix socket."""
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return str(peer[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def refusal(settings: DeliverySettings, closing: bool, open_total: int, open_from_address: int | None) -> str | None:
    """The reply refusing a new connection, or None to admit it. open_from_address is None for a
    client without an address (Unix socket)."""
    if closing:
        return REPLY_SHUTDOWN
    if open_total >= settings.max_connections:
        return REPLY_TOO_MANY_CONNECTIONS
    if open_from_address is not None and open_from_address >= settings.max_connections_per_address:
        return REPLY_TOO_MANY_FROM_ADDRESS
    return None
