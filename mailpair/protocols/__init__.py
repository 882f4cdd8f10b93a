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


def available_listeners(config: NodeConfig) -> list[tuple[str, Callable, Any]]:
    """Blocking (it may run openssl once): call it off the event loop."""
    from mailpair.protocols.delivery import DeliverySettings
    from mailpair.protocols.imap import ImapSettings, start_imap
    from mailpair.protocols.lmtp import start_lmtp
    from mailpair.protocols.smtp import start_smtp

    cert, key = node_certificate(config)
    listeners: list[tuple[str, Callable, type, Any, dict[str, Any]]] = [
        ("lmtp", start_lmtp, DeliverySettings, config.lmtp, {"unix_socket": config.lmtp_socket}),
        ("smtp", start_smtp, DeliverySettings, config.smtp, {}),
        ("imap", start_imap, ImapSettings, config.imap, {}),
    ]
    if config.imaps is not None and cert:
        listeners.append(("imaps", start_imap, ImapSettings, config.imaps, {"implicit_tls": True}))
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
