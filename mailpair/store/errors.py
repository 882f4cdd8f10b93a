"""Errors the store gives its callers. Each says what is wrong in words a person can act on."""

from __future__ import annotations


class StoreError(Exception):
    """The operation was refused and changed nothing."""


class NoSuchAccount(StoreError):
    pass


class AccountExists(StoreError):
    pass


class NoSuchMailbox(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class OverQuota(StoreError):
    pass


class TooLarge(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store could not make the change durable (full disk, I/O error, not the active node).
    Nothing was acknowledged; the caller may retry later."""


class NotActive(StoreUnavailable):
    """This node holds a passive copy; writes go to the active node."""
