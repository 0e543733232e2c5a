"""The daemon's control socket: `hubfleet deploy` asks the running daemon to apply, roll back or remove
a local hub. One JSON object per line each way, over a unix socket only its owner may open (it carries
the hub's secrets to the daemon, never anywhere else)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hubfleet.backends.local import PreparedHub
from hubfleet.daemon.supervisor import Supervisor


async def serve_control(supervisor: Supervisor, path: Path) -> asyncio.Server:
    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(lambda r, w: _handle(supervisor, r, w), path=str(path))
    os.chmod(path, 0o600)  # not by umask: it is per process, and other tasks run while this awaits
    return server


async def _handle(supervisor: Supervisor, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = json.loads(await reader.readline())
        reply = await _dispatch(supervisor, request)
    except Exception as exc:  # a bad request must never take the daemon down
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()
    writer.close()


async def _dispatch(supervisor: Supervisor, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "apply":
        state = await supervisor.apply(
            PreparedHub.from_wire(request["prepared"]), request["community"], request["stage"]
        )
    elif op == "rollback":
        state = await supervisor.rollback(request["hub"])
    elif op == "remove":
        state = await supervisor.remove(request["hub"], purge=bool(request.get("purge")))
        return {"ok": True, "state": asdict(state) if state else None}
    elif op == "status":
        return {"ok": True, "status": supervisor.snapshot()}
    else:
        return {"ok": False, "error": f"unknown op {op!r}"}
    return {"ok": state.state == "running", "state": asdict(state)}
