"""Mail delivery into the store, shared by the LMTP and SMTP listeners (lmtp.py, smtp.py).

One accepted message becomes one `deliver` store operation per database for all its recipients
(the store answers per recipient), after a Return-Path and a Received header are prepended. A
reply is sent only after the store said the delivery is durable (fsync'd log record); every store
error maps to the reply an MTA acts on: 550 5.1.1 unknown user, 552 5.2.2 over quota, 552 5.3.4
too big, 451 4.3.0 when the store cannot make it durable (the MTA retries), 421 when shutting down.

The package is split along its jobs; each module can be read alone:
- settings.py: what a listener is configured with.
- replies.py: the reply texts, store errors as replies, enhanced status codes (pure functions).
- recipients.py: an RCPT address to an account and its database, with a cache of positive answers.
- data.py: the DATA reader (CRLF.CRLF, dot-unstuffing, size limit) and the content checks.
- agent.py: the delivery itself: trace headers, one store commit per database, replies in order.
- session.py: one connection, on aiosmtpd's protocol class, with our own MAIL/RCPT/DATA.
- admission.py: who may connect (a total and a per-address limit), as pure decisions.
- listener.py: the TCP/Unix servers, the connection counts and the orderly shutdown.
- metrics.py: the Prometheus series.
Imports run down that list's reverse: listener -> session -> admission/agent -> recipients/data/replies.
"""

from mailpair.protocols.delivery.data import content_problem, read_data, unstuff
from mailpair.protocols.delivery.listener import Listener
from mailpair.protocols.delivery.session import DeliverySession
from mailpair.protocols.delivery.settings import DeliverySettings

__all__ = ["DeliverySession", "DeliverySettings", "Listener", "content_problem", "read_data", "unstuff"]
