"""Protocol listeners: LMTP and SMTP for delivery, IMAP for clients.

`available_listeners` turns a node's configuration into (name, start function, settings) for each
listener the active node runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from mailpair.config import NodeConfig

log = logging.getLogger("mailpair.protocols")


def _settings(cls: type, **values: Any) -> Any:
    known = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in values.items() if k in known})


def available_listeners(config: NodeConfig) -> list[tuple[str, Callable, Any]]:
    out = []
    for name, module, starter, settings_cls, listen in (
        ("lmtp", "mailpair.protocols.lmtp", "start_lmtp", ("mailpair.protocols.delivery", "DeliverySettings"), config.lmtp),
        ("smtp", "mailpair.protocols.smtp", "start_smtp", ("mailpair.protocols.delivery", "DeliverySettings"), config.smtp),
        ("imap", "mailpair.protocols.imap", "start_imap", ("mailpair.protocols.imap", "ImapSettings"), config.imap),
    ):
        try:
            mod = importlib.import_module(module)
            scls = getattr(importlib.import_module(settings_cls[0]), settings_cls[1])
        except ModuleNotFoundError as e:
            log.warning("%s listener not available: %s", name, e)
            continue
        settings = _settings(
            scls,
            host=listen.host,
            port=listen.port,
            domain=config.domain,
            max_message_bytes=config.max_message_bytes,
            unix_socket=config.lmtp_socket if name == "lmtp" else None,
        )
        out.append((name, getattr(mod, starter), settings))
    return out
