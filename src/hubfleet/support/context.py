"""The state of a hub, and of one person on it, at the moment a ticket is opened: what first line would
otherwise copy into the ticket by hand.

`capture_context` reads what the control plane already knows (the store's latest probe, the daemon's view of
a local hub, the hub's incidents and deploys, the person's last server session) and asks the hub itself for
the person's server (GET /hub/api/users/NAME with the control-plane service token, as the usage collector
does) and reads the hub's log for their failed starts (hubfleet.support.hub_log). The live parts share one
deadline (`timeout`, default CAPTURE_TIMEOUT): a slow or unreachable hub delays a ticket by that much at most,
and what could not be read is named in `problems`; nothing here raises for a hub that does not answer.
Nothing secret is in the result: no token, and log lines are redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select

from hubfleet.clock import as_utc, require_aware
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.monitor.incidents import list_incidents
from hubfleet.monitor.resources import server_request
from hubfleet.store.api import Store
from hubfleet.store.models import ProbeSample, ServerSession
from hubfleet.support import hub_log

CAPTURE_TIMEOUT = 8.0
"""Seconds the live parts (the hub's API, its log) may take together."""
RECENT_INCIDENTS = timedelta(days=7)
STALE_PROBE = timedelta(minutes=5)
MAX_INCIDENTS = 10
MAX_DEPLOYS = 5
MAX_TEXT = 500


def _cut(text: str | None, limit: int = MAX_TEXT) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None


# --------------------------------------------------------------------------- from the store


def _probe(store: Store, hub: str) -> dict[str, Any] | None:
    query = select(ProbeSample).where(ProbeSample.hub == hub).order_by(ProbeSample.at.desc()).limit(1)
    with store.session() as session:
        row = session.scalars(query).first()
        if row is None:
            return None
        return {
            "at": _iso(row.at),
            "ok": row.ok,
            "error": _cut(row.error),
            "latency_ms": row.latency_ms,
            "version": row.version,
        }


def _daemon_state(state_dir: Path | None, hub: str) -> dict[str, Any] | None:
    """The running daemon's view of a local hub (state, restarts, error), from daemon.json."""
    from hubfleet.runtime.status_file import read_status

    status = read_status(state_dir) if state_dir is not None else None
    entry = (status or {}).get("hubs", {}).get(hub)
    if not isinstance(entry, dict):
        return None
    return {
        "state": entry.get("state"),
        "restarts": entry.get("restarts"),
        "started_at": entry.get("started_at"),
        "error": _cut(hub_log.redact(str(entry.get("error") or ""))),
    }


def _hub_state(
    probe: dict[str, Any] | None, daemon: dict[str, Any] | None, open_down: bool, fresh: bool
) -> str:
    """One word: the daemon's state of a local hub unless it runs, else what the last probe saw (`unknown`
    when no probe is recent: nothing watches the hub now)."""
    if daemon and daemon.get("state") and daemon["state"] != "running":
        return str(daemon["state"])
    if open_down:
        return "down"
    if probe is not None and fresh:
        return "up" if probe["ok"] else "down"
    return "running" if daemon else "unknown"


def _fresh(fleet: FleetConfig, probe: dict[str, Any] | None, now: datetime) -> bool:
    """The last probe is recent (within three probe intervals, at least STALE_PROBE)."""
    if probe is None or probe["at"] is None:
        return False
    allowed = max(STALE_PROBE, timedelta(seconds=3 * fleet.settings.monitoring.probe_interval))
    return now - datetime.fromisoformat(probe["at"]) <= allowed


def _incidents(store: Store, hub: str, now: datetime) -> dict[str, list[dict[str, Any]]]:
    rows = list_incidents(store, hub=hub, limit=50)
    since = now - RECENT_INCIDENTS
    open_ = [r for r in rows if r.open][:MAX_INCIDENTS]
    recent = [r for r in rows if not r.open and r.resolved_at is not None and r.resolved_at >= since]

    def out(record: Any) -> dict[str, Any]:
        item = record.to_dict(now)
        item["cause"] = _cut(item["cause"])
        return item

    return {"open": [out(r) for r in open_], "recent": [out(r) for r in recent[:MAX_INCIDENTS]]}


def _deploys(store: Store, hub: str) -> list[dict[str, Any]]:
    return [
        {
            "at": _iso(d.finished_at or d.started_at),
            "result": d.result,
            "message": _cut(d.message),
            "config_hash": d.config_hash,
            "actor": d.actor,
            "commit": d.commit,
        }
        for d in store.deployments(hub, limit=MAX_DEPLOYS)
    ]


def _last_session(store: Store, hub: str, username: str) -> ServerSession | None:
    query = (
        select(ServerSession)
        .where(ServerSession.hub == hub, ServerSession.username == username)
        .order_by(ServerSession.started_at.desc())
        .limit(1)
    )
    with store.session() as session:
        row = session.scalars(query).first()
        if row is not None:
            session.expunge(row)
        return row


# --------------------------------------------------------------------------- from the hub


def _endpoint(fleet: FleetConfig, hub: Hub, state_dir: Path) -> Any:
    """The hub's URL and control-plane token, as the backend of its cluster knows them."""
    from hubfleet.backends import backends_for

    return backends_for(fleet, state_dir)[fleet.clusters[hub.cluster].kind].endpoint(hub.name)


def _server_state(server: dict[str, Any] | None) -> str:
    if not server:
        return "not running"
    if server.get("pending"):
        return {"spawn": "starting", "stop": "stopping"}.get(server["pending"], str(server["pending"]))
    return "running" if server.get("ready") else "not ready"


def _user(username: str, found: dict[str, Any] | None) -> dict[str, Any]:
    if found is None:
        return {"username": username, "exists": False, "server": "no such user on this hub"}
    servers = found.get("servers") or {}
    server = servers.get("") or next(iter(servers.values()), None)
    options = (server or {}).get("user_options")
    return {
        "username": username,
        "exists": True,
        "server": _server_state(server),
        "started": (server or {}).get("started"),
        "last_activity": (server or {}).get("last_activity") or found.get("last_activity"),
        "pending": (server or {}).get("pending"),
        "ready": bool((server or {}).get("ready")),
        "named_servers": sorted(name for name in servers if name),
        "admin": bool(found.get("admin")),
        "groups": list(found.get("groups") or [])[:50],
        "user_options": {str(k)[:100]: _cut(str(v), 200) for k, v in list((options or {}).items())[:20]}
        if isinstance(options, dict)
        else None,
    }


async def _fetch_user(url: str, token: str, username: str, timeout: float) -> dict[str, Any] | None:
    """GET /hub/api/users/NAME: the user with their servers (None: no such user). Raises httpx errors."""
    async with httpx.AsyncClient(timeout=timeout, verify=True) as client:
        response = await client.get(
            f"{url.rstrip('/')}/hub/api/users/{quote(username, safe='')}",
            headers={"Authorization": f"token {token}"},
        )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("the hub's answer is not a user")
    return body


def _environment(
    hub: Hub, user: dict[str, Any] | None, session: ServerSession | None
) -> dict[str, Any] | None:
    """The environment the person uses: their server's (from its user_options, resolved as the hub resolves
    them), else the one their last recorded server started with."""
    names = {env.slug: env.display_name for env in hub.environments}
    slug, source = None, None
    if user and user.get("exists") and user.get("server") != "not running":
        slug = server_request(hub, user.get("user_options") or {}, user.get("groups")).environment
        source = "server"
    if slug is None and session is not None and session.environment:
        slug, source = session.environment, "last session"
    if slug is None:
        return None
    return {"slug": slug, "display_name": names.get(slug, slug), "source": source}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return _cut(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 300)


# --------------------------------------------------------------------------- the contract


async def capture_context(
    fleet: FleetConfig,
    store: Store,
    hub: str,
    username: str | None,
    *,
    state_dir: Path | None,
    now: datetime | None = None,
    timeout: float = CAPTURE_TIMEOUT,
) -> dict[str, Any]:
    """The hub's state and version, its open and recent incidents, its last deploys, the person's server and
    failed starts, and their environment, now; `problems` lists what could not be read (never raises for a
    hub that does not answer)."""
    now = require_aware(now)
    problems: list[str] = []
    the_hub = fleet.hubs.get(hub)
    context: dict[str, Any] = {
        "hub": None,
        "incidents": {"open": [], "recent": []},
        "deploys": [],
        "user": None,
        "spawn_failures": [],
        "environment": None,
        "environment_detail": None,
        "captured_at": now.isoformat(),
        "problems": problems,
    }
    if the_hub is None:
        problems.append(f"hub '{hub}' is not in the fleet files")
        return context

    probe = daemon = None
    try:
        probe = _probe(store, hub)
        context["incidents"] = _incidents(store, hub, now)
        context["deploys"] = _deploys(store, hub)
    except Exception as exc:  # noqa: BLE001 - a damaged store leaves the rest of the context
        problems.append(f"the store could not be read: {_describe(exc)}")
    with contextlib.suppress(Exception):
        daemon = _daemon_state(state_dir, hub)
    open_down = any(i["kind"] == "down" for i in context["incidents"]["open"])
    context["hub"] = {
        "name": hub,
        "community": the_hub.community,
        "cluster": the_hub.cluster,
        "stage": the_hub.stage,
        "state": _hub_state(probe, daemon, open_down, _fresh(fleet, probe, now)),
        "version": probe["version"] if probe else None,
        "url": fleet.public_url(the_hub),
        "last_probe": probe,
        "runtime": daemon,
    }
    if username is None:
        return context

    deadline = asyncio.get_running_loop().time() + timeout
    user_task = asyncio.ensure_future(_user_from_hub(fleet, the_hub, username, state_dir, timeout, problems))
    log_task = asyncio.ensure_future(hub_log.read_hub_log(fleet, hub, state_dir, timeout))
    done, pending = await asyncio.wait(
        {user_task, log_task}, timeout=max(0.1, deadline - asyncio.get_running_loop().time())
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if user_task in done and user_task.exception() is None:
        context["user"] = user_task.result()
    elif user_task not in done:
        problems.append(f"the hub's API did not answer within {timeout:g} s")
    else:
        problems.append(f"the user's server could not be read: {_describe(user_task.exception())}")
    if log_task in done and log_task.exception() is None:
        lines, why = log_task.result()
        if lines is not None:
            context["spawn_failures"] = hub_log.spawn_failures(lines, username)
        else:
            problems.append(f"spawn failures unknown: {why}")
    elif log_task not in done:
        problems.append(f"spawn failures unknown: the hub's log was not read within {timeout:g} s")
    else:
        problems.append(f"spawn failures unknown: {_describe(log_task.exception())}")
    session = None
    with contextlib.suppress(Exception):
        session = _last_session(store, hub, username)
    if context["user"] is None:
        context["user"] = {"username": username, "exists": None, "server": "unknown"}
    if session is not None:
        context["user"]["last_session"] = {
            "started_at": _iso(session.started_at),
            "stopped_at": _iso(session.stopped_at),
            "environment": session.environment,
        }
    detail = _environment(the_hub, context["user"], session)
    context["environment_detail"] = detail
    context["environment"] = detail["slug"] if detail else None
    return context


async def _user_from_hub(
    fleet: FleetConfig, hub: Hub, username: str, state_dir: Path | None, timeout: float, problems: list[str]
) -> dict[str, Any] | None:
    if state_dir is None:
        problems.append("no state directory given: the hub's API was not asked (no control token)")
        return None
    try:
        endpoint = _endpoint(fleet, hub, state_dir)
    except Exception as exc:  # noqa: BLE001 - a hub that never ran: no token, no URL
        problems.append(f"the hub cannot be reached: {_cut(str(exc), 300)}")
        return None
    found = await _fetch_user(endpoint.url, endpoint.token, username, timeout)
    return _user(username, found)


def start_log(
    fleet: FleetConfig, hub: str, username: str, *, state_dir: Path | None, max_lines: int = 200
) -> str | None:
    """The person's last server start, from the hub's log (redacted, at most `max_lines` lines); None when
    the log cannot be read or holds no start of theirs."""
    if hub not in fleet.hubs:
        return None

    async def read() -> tuple[list[hub_log.LogLine], None] | tuple[None, str]:
        return await hub_log.read_hub_log(fleet, hub, state_dir, CAPTURE_TIMEOUT)

    if fleet.clusters[fleet.hubs[hub].cluster].kind == "local":
        if state_dir is None:
            return None
        try:
            lines = hub_log.parse(hub_log.read_local_log(state_dir, hub))
        except hub_log.LogUnavailable:
            return None
    else:  # kubectl through the cluster's credentials, on a loop of its own (a caller's loop may be running)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            try:
                lines, _ = pool.submit(asyncio.run, read()).result(timeout=CAPTURE_TIMEOUT + 2)
            except Exception:  # noqa: BLE001 - unreadable: no start log
                return None
        if lines is None:
            return None
    kept = hub_log.start_lines(lines, username, max_lines=max_lines)
    return "\n".join(kept) if kept else None
