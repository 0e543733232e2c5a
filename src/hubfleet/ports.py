"""Free loopback TCP ports."""

from __future__ import annotations

import socket


def free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A TCP port that is free on 127.0.0.1 now and not in `avoid` (ports already promised elsewhere)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
