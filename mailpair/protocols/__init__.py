"""Protocol listeners: LMTP and SMTP for delivery, IMAP for clients.

`available_listeners` turns a node's configuration into (name, start function, settings) for each
listener the active node runs.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpair.config import NodeConfig
from mailpair.protocols.tls import self_signed

logger = logging.getLogger("mailpair.protocols")


def _settings(cls: type, **values: Any) -> Any:
    known = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in values.items() if k in known})


def node_certificate(config: NodeConfig) -> tuple[str | None, str | None]:
    """The certificate the node's TLS listeners use: the configured one, else a self-signed one
    kept in DATA/tls. (None, None) if none can be made: mail still flows, without TLS."""
    if config.tls_cert and config.tls_key:
        return config.tls_cert, config.tls_key
    try:
        cert, key = self_signed(Path(config.data) / "tls", config.domain)
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("no TLS certificate (cannot make a self-signed one: %s)", e)
        return None, None
    return str(cert), str(key)


# What node.json's "delivery" object may set: the listeners' limits and timeouts, not what the
# node decides itself (addresses, domain, certificates).
DELIVERY_TUNABLE = (
    "max_recipients", "max_connections", "max_connections_per_address", "max_line_length", "idle_timeout",
    "command_timeout", "data_timeout", "min_data_rate", "data_rate_grace", "recipient_delimiter",
    "shutdown_grace", "hostname", "extra_domains", "detail_into_special_use",
)  # fmt: skip


# What node.json's "imap_settings" object may set, by the same rule.
IMAP_TUNABLE = (
    "allow_plaintext_login", "idle_timeout", "preauth_timeout", "command_timeout", "max_literal_bytes",
    "max_command_bytes", "max_connections_per_user", "max_connections", "login_delay", "login_delay_max",
    "login_penalty_window", "login_penalty_entries", "max_preauth_per_address", "preauth_literal_bytes",
    "min_data_rate", "data_rate_grace", "auth_cache_ttl", "fetch_batch",
)  # fmt: skip


def _overrides(kind: str, given: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """One of node.json's override objects, checked: unknown names are refused with the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {kind} setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return dict(given)


def delivery_overrides(config: NodeConfig) -> dict[str, Any]:
    """node.json's "delivery" object, checked."""
    return _overrides("delivery", config.delivery, DELIVERY_TUNABLE)


def imap_overrides(config: NodeConfig) -> dict[str, Any]:
    """node.json's "imap_settings" object, checked."""
    return _overrides("imap", config.imap_settings, IMAP_TUNABLE)


def available_listeners(config: NodeConfig) -> list[tuple[str, Callable, Any]]:
    """Blocking (it may run openssl once): call it off the event loop."""
    from mailpair.protocols.delivery import DeliverySettings
    from mailpair.protocols.imap import ImapSettings, start_imap
    from mailpair.protocols.lmtp import start_lmtp
    from mailpair.protocols.smtp import start_smtp

    cert, key = node_certificate(config)
    tuned = delivery_overrides(config)
    imap_tuned = imap_overrides(config)
    for name in ("extra_domains", "detail_into_special_use"):
        if name in tuned:
            tuned[name] = tuple(tuned[name])
    listeners: list[tuple[str, Callable, type, Any, dict[str, Any]]] = [
        ("lmtp", start_lmtp, DeliverySettings, config.lmtp, {"unix_socket": config.lmtp_socket, **tuned}),
        ("smtp", start_smtp, DeliverySettings, config.smtp, tuned),
        ("imap", start_imap, ImapSettings, config.imap, imap_tuned),
    ]
    if config.imaps is not None and cert:
        listeners.append(("imaps", start_imap, ImapSettings, config.imaps, {"implicit_tls": True, **imap_tuned}))
    out = []
    for name, starter, scls, listen, extra in listeners:
        settings = _settings(
            scls,
            host=listen.host,
            port=listen.port,
            domain=config.domain,
            max_message_bytes=config.max_message_bytes,
            tls_cert=cert,
            tls_key=key,
            **extra,
        )
        out.append((name, starter, settings))
    return out
