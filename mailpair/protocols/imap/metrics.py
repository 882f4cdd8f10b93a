"""Prometheus figures of the IMAP listener: commands by name and outcome, their time, sessions, and
what its defences did (login penalty, refused connections, sessions ended)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter("mailpair_imap_commands_total", "IMAP commands answered", ["command", "result"])
COMMAND_SECONDS = Histogram(
    "mailpair_imap_command_seconds",
    "Time from a command's arrival to its tagged reply",
    ["command"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
SESSIONS = Gauge("mailpair_imap_sessions", "IMAP sessions open now")
CONNECTIONS = Counter("mailpair_imap_connections_total", "IMAP connections accepted")
# The defences of guard.py and session.py (issue 17).
LOGIN_FAILURES = Counter("mailpair_imap_login_failures_total", "LOGIN/AUTHENTICATE attempts refused")
LOGIN_DELAYED = Counter("mailpair_imap_login_delayed_total", "Login attempts made to wait by the login penalty")
LOGIN_PENALTY_SECONDS = Counter(
    "mailpair_imap_login_penalty_seconds_total", "Seconds login attempts waited (before the check) for the login penalty"
)
REFUSED = Counter("mailpair_imap_connections_refused_total", "IMAP connections refused at the greeting", ["reason"])
CLOSED = Counter(
    "mailpair_imap_sessions_closed_total",
    "IMAP sessions the server ended for a defence (pre-login time, slow literal, oversized pre-login literal, "
    "credentials changed)",
    ["reason"],
)

_children: dict[tuple[str, bytes], tuple] = {}


def observe(command: str, reply: bytes, seconds: float) -> None:
    """Count one tagged reply; labelled children are cached since this runs for every command."""
    result = reply[:3].rstrip()
    key = (command, result)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (COMMANDS.labels(command, result.decode("ascii", "replace")), COMMAND_SECONDS.labels(command))
    pair[0].inc()
    pair[1].observe(seconds)
