"""Talking to the running daemon over its control socket (see daemon/control.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hubfleet.settings import UserError

SOCKET_FILE = "daemon.sock"


async def request(state_dir: Path, payload: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Send one request to the running daemon and wait for its answer."""
    path = state_dir / SOCKET_FILE
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise UserError(
            f"the fleet is not up (no daemon for {state_dir}): local hubs are deployed to the running "
            "daemon; start it with `hubfleet up --detach`"
        ) from None
    try:
        writer.write(json.dumps(payload).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=timeout)
    finally:
        writer.close()
    if not line:
        raise UserError(f"the hubfleet daemon closed the connection; see {state_dir / 'daemon.log'}")
    return json.loads(line)
