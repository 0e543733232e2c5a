"""The daemon's control socket: `hubfleet deploy` asks the running daemon to apply, roll back or remove
a local hub. One JSON object per line each way, over a unix socket only its owner may open (it carries
the hub's secrets to the daemon, never anywhere else)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hubfleet.backends.local import PreparedHub
from hubfleet.config.fields import NAME_PATTERN
from hubfleet.daemon.supervisor import Supervisor

log = logging.getLogger(__name__)
STAGES = ("staging", "prod")
Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A request handled by another daemon task (`event_ready`: daemon/event_schedule.py)."""
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)
"""What reading from or writing to a client that went away raises: not the daemon's problem."""


async def serve_control(
    supervisor: Supervisor, path: Path, ops: Mapping[str, Op] | None = None
) -> asyncio.Server:
    """`ops`: requests other tasks answer, by their `op` (checked first for a valid `hub` name)."""
    path.unlink(missing_ok=True)
    extra = dict(ops or {})
    server = await asyncio.start_unix_server(lambda r, w: _handle(supervisor, r, w, extra), path=str(path))
    os.chmod(path, 0o600)  # not by umask: it is per process, and other tasks run while this awaits
    return server


async def _handle(
    supervisor: Supervisor,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ops: Mapping[str, Op] | None = None,
) -> None:
    try:
        line = await reader.readline()
        if not line:  # connected and left without asking anything
            return
        try:
            request = json.loads(line)
            op = request.get("op") if isinstance(request, dict) else None
            if ops and isinstance(op, str) and op in ops:
                problem = name_problem(request.get("hub"))
                reply = {"ok": False, "error": problem} if problem else await ops[op](request)
            else:
                reply = await _dispatch(supervisor, request)
        except Exception as exc:  # a bad request must never take the daemon down
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except CLIENT_GONE as exc:  # what it asked for is done all the same (a deploy goes on)
        log.info("control socket: a client left before its answer (%s)", type(exc).__name__)
    finally:
        writer.close()


def name_problem(value: object, what: str = "hub") -> str | None:
    """Why `value` cannot be a hub's (or a community's) name on the control socket, or None: the same
    rule as in the fleet's files, so that a name never leaves the directories made for it (`../x`)."""
    if isinstance(value, str) and re.fullmatch(NAME_PATTERN, value):
        return None
    return (
        f"{what} name {value!r} is not a valid name; use 1-63 lower-case letters, digits and '-', "
        "starting and ending with a letter or digit"
    )


def request_problem(request: object) -> str | None:
    """Why `request` cannot be dispatched (not an object, or a name or stage the fleet's files would
    refuse), or None."""
    if not isinstance(request, dict):
        return "a request is one JSON object"
    op = request.get("op")
    if op == "apply":
        prepared = request.get("prepared")
        if not isinstance(prepared, dict):
            return "apply needs `prepared`, an object"
        if request.get("stage") not in STAGES:
            return f"stage {request.get('stage')!r} is not one of {', '.join(STAGES)}"
        return name_problem(prepared.get("name")) or name_problem(request.get("community"), "community")
    if op in ("rollback", "remove", "release"):
        return name_problem(request.get("hub"))
    if op == "hold":
        reason = request.get("reason")
        if not isinstance(reason, str) or len(reason) > 500:
            return "hold needs `reason`, text of at most 500 characters"
        return name_problem(request.get("hub"))
    return None


async def _dispatch(supervisor: Supervisor, request: dict[str, Any]) -> dict[str, Any]:
    problem = request_problem(request)
    if problem:
        log.warning("control socket: request refused: %s", problem)
        return {"ok": False, "error": problem}
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
    elif op in ("hold", "release"):
        if request["hub"] not in supervisor.hubs:
            return {"ok": False, "error": f"hub {request['hub']!r} is not run by this daemon"}
        if op == "hold":
            state = await supervisor.hold(request["hub"], request["reason"])
            return {"ok": state.state in ("held", "retired"), "state": asdict(state)}
        state = await supervisor.release(request["hub"])
    elif op == "front_door_reload":
        door = await supervisor.reload_front_door()
        ok = door.get("state") in ("running", "off") and not door.get("reload_error")
        return {"ok": ok, "front_door": door}
    else:
        return {"ok": False, "error": f"unknown op {op!r}"}
    return {"ok": state.state == "running", "state": asdict(state)}
