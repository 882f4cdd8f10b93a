"""RCPT addresses to accounts: which database holds the user, and which folder a +detail names.

Rules this module keeps: only positive answers are cached (a user added a moment ago is found at
the next RCPT), and a cached account is forgotten as soon as its deletion is committed (the
database's change listener runs on its writer thread; a dict pop is atomic under the GIL). A
+detail delivers only into a folder without a special use (issue 17: anyone could put mail in a
user's Sent or Drafts, where it passes for the user's own): a folder with one (Sent, Drafts, Trash,
Junk, Archive...), or bearing one of those names, is refused and the message goes to INBOX,
unless the account is listed in settings.detail_into_special_use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailpair.protocols.delivery.replies import recipient_error_reply
from mailpair.protocols.delivery.settings import DeliverySettings
from mailpair.store import NodeStore, StoreError
from mailpair.store.database import Change, Database
from mailpair.store.names import DELIMITER, InvalidName, check_user, normalise_mailbox
from mailpair.store.records import RecordType

logger = logging.getLogger("mailpair.delivery")

# The names the store gives its special-use folders: a folder so named but made without the
# attribute (by a client that does not know SPECIAL-USE) is the user's Sent all the same.
SPECIAL_NAMES = frozenset({"drafts", "sent", "trash", "junk", "archive", "spam", "sent messages", "deleted messages"})


def _special_use(conn, user: str, folder: str) -> str | None:
    row = conn.execute("SELECT special_use FROM mailboxes WHERE account=? AND name=?", (user, folder)).fetchone()
    return row[0] if row else None


@dataclass(slots=True)
class Recipient:
    address: str  # as given in RCPT
    user: str
    folder: str | None
    db: Database


class RecipientLookup:
    def __init__(self, store: NodeStore, settings: DeliverySettings):
        self.store = store
        self.settings = settings
        self.domains = {settings.domain.lower(), *(d.lower() for d in settings.extra_domains)}
        self._known: dict[str, Database] = {}  # account -> its database (positive answers only)
        self._watched: set[int] = set()

    def _watch(self, db: Database) -> None:
        """Forget cached accounts of db when they are deleted."""
        if id(db) in self._watched:
            return
        self._watched.add(id(db))

        def on_change(changes: list[Change]) -> None:
            for ch in changes:
                if ch.type is RecordType.ACCOUNT_DEL:
                    for name in ch.accounts:
                        self._known.pop(name, None)

        db.add_listener(on_change)

    async def _find_account(self, user: str) -> Database | None:
        db = self._known.get(user)
        if db is not None:
            return db
        for each in list(self.store.databases.values()):
            self._watch(each)  # before the lookup, so a delete right after it still evicts
        db = await self.store.find_database(user)
        if db is not None:
            self._known[user] = db
        return db

    async def resolve(self, address: str) -> Recipient | str:
        """A recipient address -> Recipient, or the reply refusing it."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, self.settings.domain  # LMTP peers may send bare user names
        if not local or (domain.lower() not in self.domains):
            return f"550 5.1.1 <{address}> Recipient address rejected: domain not served here"
        user = local.lower()
        candidates: list[tuple[str, str | None]] = [(user, None)]
        delim = self.settings.recipient_delimiter
        if delim and delim in user:
            # user+detail: the detail names a folder (kept as written: folder names are
            # case-sensitive). A user name may itself hold the delimiter, so it is tried second.
            candidates.insert(0, (user.partition(delim)[0], local.partition(delim)[2] or None))
        for user, folder in candidates:
            try:
                check_user(user)
            except InvalidName:
                continue
            try:
                db = await self._find_account(user)
            except StoreError as e:
                return recipient_error_reply(address, e)[0]
            if db is not None:
                if folder is not None and not await self._may_deliver_into(db, user, folder):
                    logger.info("%s: +detail names the special-use folder %r; delivering to INBOX", address, folder)
                    folder = None
                return Recipient(address, user, folder, db)
        return f"550 5.1.1 <{address}> User unknown"

    async def _may_deliver_into(self, db: Database, user: str, folder: str) -> bool:
        """Whether a +detail may put mail into this folder of user's (see the module's header)."""
        if user in self.settings.detail_into_special_use:
            return True
        name = normalise_mailbox(folder)
        leaf = name.rsplit(DELIMITER, 1)[-1].lower()
        if leaf in SPECIAL_NAMES:
            return False
        return await db.read(_special_use, user, name) is None
