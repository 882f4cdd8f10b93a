"""All the databases one node hosts, and which database holds which account.

Layout of a node's data directory:
    DATA/databases/<name>/id, log/, state.sqlite, pins.json
Account names are unique across the node's databases.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailpair.store import names
from mailpair.store.accounts import has_account
from mailpair.store.database import Database, DatabaseConfig
from mailpair.store.errors import NoSuchAccount, StoreError
from mailpair.store.prepare import Preparer

DEFAULT_DATABASE = "mail"

logger = logging.getLogger("mailpair.store")


class NodeStore:
    def __init__(self, data_dir: Path, config: DatabaseConfig | None = None, writable: bool = True):
        self.data_dir = Path(data_dir)
        self.config = config or DatabaseConfig()
        self.writable = writable
        self.databases: dict[str, Database] = {}
        self.broken: dict[str, str] = {}  # database name -> why it could not be opened (keep_going)
        # How protocols analyse incoming messages; a node swaps in one with helper processes.
        self.preparer = Preparer(0)

    @property
    def db_root(self) -> Path:
        return self.data_dir / "databases"

    def open(self, create_default: bool = True, keep_going: bool = False) -> NodeStore:
        """Open every database. With keep_going (a passive node), one that cannot be opened (a
        damaged segment or state file) is left closed and listed in `broken` instead of stopping
        the others."""
        self.db_root.mkdir(parents=True, exist_ok=True)
        for path in sorted(p for p in self.db_root.iterdir() if (p / "id").exists()):
            db = Database(path, self.config, writable=self.writable)
            try:
                db.open()
            except Exception as e:
                if not keep_going:
                    raise
                self.broken[path.name] = str(e)
                logger.error("database %s cannot be opened: %s", path.name, e)
                with contextlib.suppress(Exception):
                    db.log.close()
                continue
            self.databases[db.name] = db
        if create_default and not self.databases and self.writable:
            self.create_database(DEFAULT_DATABASE)
        return self

    def create_database(self, name: str) -> Database:
        names.check_database(name)
        if name in self.databases:
            raise StoreError(f"database {name} exists")
        db = Database.create(self.db_root / name, self.config)
        db.writable = self.writable
        self.databases[name] = db
        return db

    def close(self) -> None:
        for db in self.databases.values():
            db.close()
        self.databases.clear()

    def database_of(self, user: str) -> Database:
        """The database that holds user's account (NoSuchAccount if none). Blocking: for the CLI
        and tools; code on the event loop uses find_database."""
        for db in list(self.databases.values()):
            if db.read_sync(has_account, user):
                return db
        raise NoSuchAccount(f"no such account: {user}")

    async def find_database(self, user: str) -> Database | None:
        """The database that holds user's account, or None; reads on each database's reader."""
        return (await self.find_account(user))[0]

    async def find_account(self, user: str, read: Callable[..., Any] = has_account) -> tuple[Database | None, Any]:
        """The database that holds user's account and what `read(conn, user)` found there (a
        login reads the account's row), or (None, None); reads on each database's reader."""
        for db in list(self.databases.values()):
            found = await db.read(read, user)
            if found:
                return db, found
        return None, None

    def default_database(self) -> Database:
        if DEFAULT_DATABASE in self.databases:
            return self.databases[DEFAULT_DATABASE]
        if not self.databases:
            raise StoreError("this node has no database")
        return next(iter(self.databases.values()))
