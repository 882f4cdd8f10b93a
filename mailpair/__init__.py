"""mailpair: a mailbox server that runs as an active/passive pair with continuous log replication."""

__version__ = "0.1.0"
