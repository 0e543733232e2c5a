"""Free loopback TCP ports, and who holds a taken one.

A hub's internal ports (its own, its proxy's API, its users' servers) are picked here, written down, and bound
seconds or days later. A port from the kernel's ephemeral range (a bind to port 0) can be handed to any
outgoing connection or to another process's bind(0) in the meantime, and the hub then fails with "Address
already in use": that happened in CI. So they come from outside that range: by default the ports above it
(61000-65535 on Linux's default range), or from HUBFLEET_INTERNAL_PORTS ("LOW-HIGH") where an operator keeps
a range for hubfleet (the test suite gives each worker its own).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from pathlib import Path

import psutil

RANGE_ENV = "HUBFLEET_INTERNAL_PORTS"
EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortRangeError(ValueError):
    """HUBFLEET_INTERNAL_PORTS is malformed, or no port in the range is free."""


def internal_range() -> range:
    """HUBFLEET_INTERNAL_PORTS, else the larger span outside the kernel's ephemeral range."""
    if text := os.environ.get(RANGE_ENV, "").strip():
        low, _, high = text.partition("-")
        try:
            first, last = int(low), int(high)
        except ValueError:
            raise PortRangeError(f"{RANGE_ENV}={text!r} is not LOW-HIGH (for example 40000-40999)") from None
        if not 1024 <= first <= last <= 65535:
            raise PortRangeError(f"{RANGE_ENV}={text!r}: give 1024 <= LOW <= HIGH <= 65535")
        return range(first, last + 1)
    try:
        low, high = (int(part) for part in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    above, below = range(high + 1, 65536), range(10000, low)
    return above if len(above) >= len(below) else below


def free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A TCP port outside the ephemeral range, free on 127.0.0.1 now and not in `avoid` (ports promised
    elsewhere). Picked at random so that two fleets picking at the same moment rarely meet."""
    ports = internal_range()
    # random draws first: listing the whole range on every call made a 5,000-hub fleet quadratic
    for _ in range(64):
        port = random.choice(ports)
        if port not in avoid and _bindable(port):
            return port
    candidates = [port for port in ports if port not in avoid]
    random.shuffle(candidates)
    for port in candidates:
        if _bindable(port):
            return port
    raise PortRangeError(
        f"no free port in {internal_range().start}-{internal_range().stop - 1} on 127.0.0.1: "
        f"set {RANGE_ENV}=LOW-HIGH to a range hubfleet may use"
    )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
