"""Free loopback TCP ports, and who holds a taken one."""

from __future__ import annotations

import contextlib
import socket

import psutil


def free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A TCP port that is free on 127.0.0.1 now and not in `avoid` (ports already promised elsewhere)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def port_holder(port: int) -> str:
    """Who listens on a loopback port, for the error message (best effort)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                except psutil.Error:
                    return f" by pid {conn.pid}"
    return ""
