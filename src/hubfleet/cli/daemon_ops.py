"""Asking the fleet's running daemon to hold or release a hub, for commands that change its data
(`restore --database`, `retire`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hubfleet.runtime.control_client import request
from hubfleet.settings import UserError


def daemon_runs(state: Path, hub: str) -> bool:
    """Whether the fleet's daemon runs (supervises) this hub."""
    try:
        reply = asyncio.run(request(state, {"op": "status"}, timeout=30))
    except UserError:
        return False
    return hub in (reply.get("status") or {}).get("hubs", {})


def control(state: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """One control request; UserError naming the hub and the reason when the daemon could not do it."""
    reply = asyncio.run(request(state, payload, timeout=300))
    if not reply.get("ok"):
        error = reply.get("error") or (reply.get("state") or {}).get("error") or "no reason given"
        raise UserError(f"the daemon could not {payload['op']} hub {payload['hub']}: {error}")
    return reply
