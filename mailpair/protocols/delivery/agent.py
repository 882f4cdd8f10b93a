"""The delivery agent: recipient checks at RCPT, and the delivery of one message after DATA.

Rules this module keeps: a recipient gets 250 only after the store reported the record that holds
its copy durable; one message is one `deliver` commit per database (all its recipients there at
once), the databases in parallel; a failure that is not the store's answer (a parser crash) is a
temporary reply, so the MTA keeps the message. It is also aiosmtpd's handler (the EHLO and
exception hooks), the one object every session of a listener shares.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailpair.protocols.delivery.metrics import DELIVERIES, DELIVERY_SECONDS, RESULTS
from mailpair.protocols.delivery.recipients import Recipient, RecipientLookup
from mailpair.protocols.delivery.replies import REPLY_SHUTDOWN, recipient_error_reply
from mailpair.protocols.delivery.settings import DeliverySettings
from mailpair.store import NodeStore, StoreError, TooLarge
from mailpair.store.database import Database

logger = logging.getLogger("mailpair.delivery")

_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


def header_word(text: str | None, fallback: str = "unknown") -> str:
    """A client-supplied word made safe for a header: no spaces, controls or non-ASCII."""
    return _NOT_PRINTABLE.sub("?", text)[:255] if text else fallback


class DeliveryEnvelope(Envelope):
    """aiosmtpd's envelope plus the recipients as resolved at RCPT (in RCPT order)."""

    def __init__(self) -> None:
        super().__init__()
        self.recipients: list[Recipient] = []


class DeliveryAgent:
    def __init__(self, store: NodeStore, settings: DeliverySettings, protocol: str):
        self.store = store
        self.settings = settings
        self.protocol = protocol
        self.hostname = settings.hostname or settings.domain
        self.recipients = RecipientLookup(store, settings)
        self.closing = False
        self._results = {r: DELIVERIES.labels(protocol, r) for r in RESULTS}
        self._seconds = DELIVERY_SECONDS.labels(protocol)
        self._seq = 0

    # ------------------------------------------------------------------ aiosmtpd hooks
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return lines

    async def handle_exception(self, error: Exception) -> str:
        logger.exception("%s session error", self.protocol, exc_info=error)
        return "451 4.3.0 Internal error, try again later"

    # ------------------------------------------------------------------ RCPT
    async def add_recipient(self, envelope: DeliveryEnvelope, address: str, options: list[str]) -> str:
        """Check one RCPT address and, if it is ours, add it to the envelope; the reply."""
        if self.closing:
            return REPLY_SHUTDOWN
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.settings.max_recipients} per message)"
        found = await self.recipients.resolve(address)
        if isinstance(found, str):
            self._results["rejected"].inc()
            return found
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        envelope.recipients.append(found)
        return f"250 2.1.5 <{address}> Recipient ok"

    # ------------------------------------------------------------------ delivery
    def trace_headers(self, session: Session, envelope: Envelope, with_proto: str) -> bytes:
        """Return-Path and Received (RFC 5321 4.4) for this message."""
        sender = envelope.mail_from or ""
        if sender == "<>":
            sender = ""
        peer = session.peer
        ip = peer[0] if isinstance(peer, tuple) and peer else "local"
        self._seq += 1
        qid = f"{time.time_ns() // 1000:x}.{os.getpid():x}.{self._seq:x}"
        rcpts = envelope.rcpt_tos
        for_part = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
        text = (
            f"Return-Path: <{sender}>\r\n"
            f"Received: from {header_word(session.host_name)} ([{ip}])\r\n"
            f"\tby {self.hostname} (mailpair) with {with_proto} id {qid}{for_part};\r\n"
            f"\t{email.utils.formatdate(localtime=False)}\r\n"
        )
        return text.encode("utf-8", "surrogateescape")

    async def deliver(self, trace: bytes, content: bytes, recipients: list[Recipient]) -> list[str]:
        """Store one message for all recipients; the reply for each, in order. Only after the
        store reports the record durable does any recipient get a 250."""
        started = time.perf_counter()
        replies: list[str] = [""] * len(recipients)
        raw = trace + content
        limit = self.settings.max_message_bytes + len(trace)
        try:
            prepared = await self.store.preparer.prepare(raw, limit)
        except TooLarge as e:
            return self._all(recipients, e)
        except Exception as e:  # a parser failure must not lose the message: the MTA retries
            logger.exception("cannot parse message")
            return self._all(recipients, StoreError(str(e)))
        by_db: dict[int, tuple[Database, list[int]]] = {}
        for i, r in enumerate(recipients):
            by_db.setdefault(id(r.db), (r.db, []))[1].append(i)
        date = time.time_ns() // 1000  # internal date: the delivery time

        async def one(db: Database, idx: list[int]) -> None:
            try:
                res = await db.acommit(
                    "deliver", recipients=[(recipients[i].user, recipients[i].folder) for i in idx], date=date, **prepared
                )
            except StoreError as e:
                for i in idx:
                    replies[i] = self._reply_error(recipients[i].address, e)
                return
            except Exception as e:
                logger.exception("delivery failed")
                for i in idx:
                    replies[i] = self._reply_error(recipients[i].address, StoreError(str(e)))
                return
            lsn = res.get("lsn")
            for i, outcome in zip(idx, res["results"], strict=True):
                if outcome[0] == "ok":
                    replies[i] = f"250 2.0.0 <{recipients[i].address}> Delivered (uid {outcome[2]}, lsn {lsn})"
                    self._results["ok"].inc()
                else:
                    replies[i] = self._reply_error(recipients[i].address, outcome[1])

        groups = list(by_db.values())
        if len(groups) == 1:
            await one(*groups[0])
        else:
            await asyncio.gather(*(one(db, idx) for db, idx in groups))
        self._seconds.observe(time.perf_counter() - started)
        return replies

    def _reply_error(self, rcpt: str, err: BaseException) -> str:
        reply, result = recipient_error_reply(rcpt, err)
        self._results[result].inc()
        return reply

    def _all(self, recipients: list[Recipient], err: BaseException) -> list[str]:
        return [self._reply_error(r.address, err) for r in recipients]

    def reject_all(self, recipients: list[Recipient], reply: str) -> list[str]:
        self._results["rejected"].inc(len(recipients))
        return [reply] * len(recipients)
