"""IMAP4rev1/IMAP4rev2 server over the store.

Layers, each its own module: framing (bytes to commands, sans-I/O), args (tokens), wire
(response bytes), seqset, mutf7, sections/fetch/search (message data, run on the database's
reader thread), selected (one session's view of its mailbox), transport (the byte pipe a session
reads and writes: TCP streams, or memory in tests), session (state machine and dispatch), cmd_*
(command handlers), host (what sessions share and the callback loop between them and it, no
socket), server (the asyncio listener, an ImapHost that accepts TCP connections).
"""

from __future__ import annotations

from mailpair.protocols.imap import cmd_auth, cmd_mailbox, cmd_message  # noqa: F401 - registers handlers
from mailpair.protocols.imap.server import ImapServer
from mailpair.protocols.imap.settings import ImapSettings
from mailpair.store import NodeStore

__all__ = ["ImapServer", "ImapSettings", "start_imap"]


async def start_imap(store: NodeStore, settings: ImapSettings) -> ImapServer:
    """Listen for IMAP clients; the returned server has `.port` and `async close()`."""
    return await ImapServer(store, settings).start()
