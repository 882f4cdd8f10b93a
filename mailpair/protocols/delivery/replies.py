"""Reply texts of the delivery listeners, as pure functions of what happened.

Rules this module keeps: a store error on a recipient maps to the reply an MTA acts on (5xx: the
message bounces; 4xx: the MTA keeps it and retries), and anything unforeseen is temporary, so a
message is never lost to an error we did not name.
"""

from __future__ import annotations

import re

from mailpair.store import NoSuchAccount, OverQuota, StoreUnavailable, TooLarge

REPLY_SHUTDOWN = "421 4.3.2 Service shutting down, try again later"
REPLY_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
REPLY_TOO_MANY_FROM_ADDRESS = "421 4.7.0 Too many connections from your address, try again later"
REPLY_TIMEOUT = "421 4.4.2 Timeout exceeded, closing connection"


def too_slow_reply(min_rate: int) -> str:
    """DATA arrived under the minimum rate: the message is not taken, the MTA retries."""
    return f"421 4.4.2 Data arriving too slowly (under {min_rate} bytes/s), closing connection"


def recipient_error_reply(rcpt: str, err: BaseException) -> tuple[str, str]:
    """(reply, metric result) for a store error on one recipient."""
    if isinstance(err, NoSuchAccount):
        return f"550 5.1.1 <{rcpt}> User unknown", "unknown_user"
    if isinstance(err, OverQuota):
        return f"552 5.2.2 <{rcpt}> Mailbox full (over quota)", "over_quota"
    if isinstance(err, TooLarge):
        return f"552 5.3.4 <{rcpt}> Message too big for this system", "too_big"
    if isinstance(err, StoreUnavailable):  # includes NotActive
        return f"451 4.3.0 <{rcpt}> Mail store cannot take mail now, try again later", "unavailable"
    # Anything else the store refused: temporary, so the MTA keeps the message rather than lose it.
    return f"451 4.3.0 <{rcpt}> Temporary store error, try again later", "error"


# Enhanced status codes (RFC 2034) for aiosmtpd's own replies, which carry none.
_ENHANCED = {
    "221": "2.0.0",
    "250": "2.0.0",
    "421": "4.3.0",
    "451": "4.3.0",
    "452": "4.5.3",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.3.0",
    "555": "5.5.4",
}
_HAS_ENHANCED = re.compile(r"^\d\d\d [245]\.\d{1,3}\.\d{1,3}")


def with_enhanced_code(status: str) -> str:
    """A one-line reply with an enhanced status code added after the basic one, if it has none
    and the basic code has a known one."""
    if len(status) > 4 and status[3] == " " and not _HAS_ENHANCED.match(status):
        enhanced = _ENHANCED.get(status[:3])
        if enhanced:
            return f"{status[:3]} {enhanced} {status[4:]}"
    return status


def smtp_data_reply(replies: list[str]) -> str:
    """SMTP's one reply for a message from the per-recipient ones: 250 only when every recipient
    got 250; else the first failure, a temporary one first (the relay retries rather than bounce
    a recipient who may get it on retry; a duplicate is possible, a loss is not)."""
    failed = [r for r in replies if not r.startswith("250")]
    if not failed:
        n = len(replies)
        return f"250 2.0.0 Message accepted for delivery to {n} recipient{'s' if n != 1 else ''}"
    temporary = [r for r in failed if r.startswith("4")]
    return (temporary or failed)[0]
