"""A free TCP port for a listener to be configured with: `pair up`, the benchmarks and the tests
all ask here.

Rule this module keeps: the port is free when asked, not reserved; a caller that binds it later may
lose it to another process, so it is for configuring local pairs and tests, never production.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on host that no socket holds now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
