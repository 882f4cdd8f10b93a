"""SMTP listener (RFC 5321 with ESMTP: SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, SMTPUTF8,
STARTTLS) for a relay that delivers straight into mailpair.

SMTP has one reply for the whole message. Recipients are checked at RCPT, so DATA normally
succeeds or fails for all of them together; if the store's answers differ per recipient (one over
quota, one delivered) the reply is the failure -- temporary if any failure is temporary -- so the
relay retries or bounces rather than believing a recipient got mail it did not: a duplicate is
possible, a loss is not. LMTP reports per recipient and has no such case.

STARTTLS uses settings.tls_cert/tls_key; without them a self-signed certificate for the host name
is made with `openssl` into settings.tls_dir (or a temporary directory removed on close).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

from mailpair.protocols.delivery import DeliverySession, DeliverySettings, Listener
from mailpair.protocols.delivery.replies import smtp_data_reply
from mailpair.protocols.tls import self_signed
from mailpair.store import NodeStore

logger = logging.getLogger("mailpair.smtp")


class SmtpSession(DeliverySession):
    protocol_name = "smtp"

    def data_replies(self, replies: list[str]) -> str:
        return smtp_data_reply(replies)

    def received_with(self) -> str:
        return "ESMTPS" if self.session is not None and self.session.ssl is not None else "ESMTP"

    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._ehlo(hostname or "")


async def tls_context(settings: DeliverySettings, hostname: str) -> tuple[ssl.SSLContext, Path | None]:
    """The STARTTLS context, and a temporary directory to remove on close (or None)."""
    temp = None
    if settings.tls_cert and settings.tls_key:
        cert, key = Path(settings.tls_cert), Path(settings.tls_key)
    else:
        if settings.tls_dir:
            directory = Path(settings.tls_dir)
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = temp = Path(tempfile.mkdtemp(prefix="mailpair-smtp-tls-"))
        cert, key = await asyncio.to_thread(self_signed, directory, hostname, "smtp")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, temp


async def start_smtp(store: NodeStore, settings: DeliverySettings) -> Listener:
    """Listen for SMTP on settings.host:port, STARTTLS offered."""
    listener = Listener(store, settings, "smtp", SmtpSession)
    try:
        ctx, temp = await tls_context(settings, listener.agent.hostname)
    except (OSError, subprocess.SubprocessError, ssl.SSLError) as e:
        if settings.tls_cert:  # a configured certificate that cannot be used is an error
            raise
        # No openssl to make a certificate: mail still flows, only without STARTTLS.
        logger.warning("smtp: no STARTTLS (cannot make a self-signed certificate: %s)", e)
        return await listener.start()
    listener.session_kwargs["tls_context"] = ctx
    if temp is not None:
        listener.on_close(lambda: shutil.rmtree(temp, ignore_errors=True))
    return await listener.start()
