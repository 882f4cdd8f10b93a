"""Account lookups on one database's connection: the one place that asks the accounts table who
exists, so delivery, the admin API, the CLI and the node store all ask it the same way.

Rules this module keeps: read-only queries, run on whatever thread owns the connection (a
Database's reader or writer); nothing here decides or changes state.
"""

from __future__ import annotations

import sqlite3


def has_account(conn: sqlite3.Connection, user: str) -> bool:
    """Whether the account exists in this database."""
    return conn.execute("SELECT 1 FROM accounts WHERE name=?", (user,)).fetchone() is not None


def list_accounts(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(name, quota bytes, used bytes) of every account, by name."""
    return conn.execute("SELECT name, quota_bytes, used_bytes FROM accounts ORDER BY name").fetchall()
