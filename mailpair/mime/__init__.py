"""MIME analysis done once at delivery: the IMAP ENVELOPE and BODYSTRUCTURE of a message."""

from mailpair.mime.analysis import analyse

__all__ = ["analyse"]
