"""MIME analysis done once at delivery: the IMAP ENVELOPE and BODYSTRUCTURE of a message."""

from mailpair.mime.structure import analyse

__all__ = ["analyse"]
