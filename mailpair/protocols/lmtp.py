"""LMTP listener (RFC 2033): how an MTA on the same site (Postfix, Exim) hands mail to mailpair.

After DATA every accepted recipient gets its own reply, in RCPT order, each true to what the store
made durable for that recipient. LMTP has no queue of its own: a 250 means the message is in the
fsync'd log; anything else leaves the message with the MTA.
"""

from __future__ import annotations

from mailpair.protocols.delivery import DeliverySession, DeliverySettings, Listener
from mailpair.store import NodeStore


class LmtpSession(DeliverySession):
    protocol_name = "lmtp"
    with_proto = "LMTP"

    async def smtp_LHLO(self, arg: str | None) -> None:
        """The LMTP greeting, in place of HELO/EHLO."""
        if not arg:
            await self.push("501 5.5.4 Syntax: LHLO hostname")
            return
        await self._ehlo(arg)

    async def smtp_HELO(self, arg: str | None) -> None:
        await self.push('500 5.5.1 Error: command "HELO" not recognized (this is LMTP: use LHLO)')

    async def smtp_EHLO(self, arg: str | None) -> None:
        await self.push('500 5.5.1 Error: command "EHLO" not recognized (this is LMTP: use LHLO)')

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        if self.session is None or not self.session.host_name:
            await self.push("503 5.5.1 Error: send LHLO first")
            return True
        return False


async def start_lmtp(store: NodeStore, settings: DeliverySettings) -> Listener:
    """Listen for LMTP on settings.host:port (and settings.unix_socket if set)."""
    listener = Listener(store, settings, "lmtp", LmtpSession)
    return await listener.start(unix_socket=settings.unix_socket)
