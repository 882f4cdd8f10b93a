"""The mailbox store: transaction log, materialised database, replay.

Public surface: NodeStore (all databases of a node), Database (one database), prepare_message
and Preparer (analyse a message once before delivery, in-process or in helper processes), the
errors, and hash/verify of passwords.
"""

from mailpair.store.database import Change, Database, DatabaseConfig
from mailpair.store.errors import (
    AccountExists,
    MailboxExists,
    NoSuchAccount,
    NoSuchMailbox,
    NotActive,
    OverQuota,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from mailpair.store.node_store import NodeStore
from mailpair.store.passwords import hash_password, verify_password
from mailpair.store.prepare import Preparer, prepare_message

__all__ = [
    "AccountExists",
    "Change",
    "Database",
    "DatabaseConfig",
    "MailboxExists",
    "NoSuchAccount",
    "NoSuchMailbox",
    "NodeStore",
    "NotActive",
    "OverQuota",
    "Preparer",
    "StoreError",
    "StoreUnavailable",
    "TooLarge",
    "hash_password",
    "prepare_message",
    "verify_password",
]
